// Agreement with CLIP_benchmark itself (label interop): small CLIP_benchmark-format folders made
// from the Fashion-MNIST test files (classification, multilabel, retrieval;
// tests/eval/clip_benchmark_folders.py), one tiny model exported in OpenCLIP's format, then
// `clip_benchmark eval --model local-dir:EXPORT` (the pinned clip-benchmark 1.6.2, fp32: --no_amp;
// run through tests/eval/clip_benchmark_run.py, its NumPy 2 shim)
// and `clipper benchmark --weights EXPORT` on the same folders: every metric within 0.1 point.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "clipper/io/openclip.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/model/model_spec.hpp"
#include "test_util.hpp"

namespace {

constexpr double kTolerance = 0.001;  // 0.1 point: one sample in a thousand

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("missing " + path);
  return nlohmann::json::parse(in);
}

struct Case {
  std::string folder, task;
};

}  // namespace

TEST(ClipBenchmarkInterop, SameMetricsAsClipBenchmark) {
  clipper::test::TempDir dir;
  const auto py = clipper::test::python();
  const std::string data = dir.file("data");
  auto r = clipper::test::run(py + " " +
                              clipper::test::source_path("tests/eval/clip_benchmark_folders.py") +
                              " --out " + data);
  ASSERT_EQ(r.exit_code, 0) << r.output;

  // A tiny model with random weights, exported as `clipper export` writes it.
  const auto spec = clipper::model::load_model_spec("tiny-fmnist-vit");
  const auto model = clipper::model::create_model(spec, 7);
  const std::string exported = dir.file("export");
  clipper::io::export_openclip(model, spec, exported);

  const std::vector<Case> cases = {{"fmnist_cls", "zeroshot_classification"},
                                   {"fmnist_multi", "zeroshot_classification"},
                                   {"fmnist_retr", "zeroshot_retrieval"}};
  std::string ours_cmd = clipper::test::clipper_bin() + " benchmark --device cpu --weights " +
                         exported + " --output-dir " + dir.file("ours");
  for (const auto& c : cases) ours_cmd += " --dataset " + data + "/" + c.folder;
  r = clipper::test::run(ours_cmd);
  ASSERT_EQ(r.exit_code, 0) << ours_cmd << "\n" << r.output;
  std::cout << r.output;

  for (const auto& c : cases) {
    const std::string theirs = dir.file("theirs_" + c.folder + ".json");
    const std::string cmd = py + " " +
                            clipper::test::source_path("tests/eval/clip_benchmark_run.py") +
                            " eval --dataset wds/" + c.folder + " --dataset_root " + data + "/" +
                            c.folder + " --task " + c.task + " --model local-dir:" + exported +
                            " --pretrained none --no_amp --recall_k 1 5 10 --batch_size 64" +
                            " --num_workers 0 --quiet --output " + theirs;
    r = clipper::test::run(cmd);
    ASSERT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;
    const auto t = read_json(theirs);
    const auto o =
        read_json(dir.file("ours/" + c.folder + "_export_tiny-fmnist-vit_en_" + c.task + ".json"));
    EXPECT_EQ(o["dataset"], t["dataset"]);
    EXPECT_EQ(o["task"], t["task"]);
    ASSERT_EQ(o["metrics"].size(), t["metrics"].size()) << o.dump() << "\n" << t.dump();
    for (const auto& [name, value] : t["metrics"].items()) {
      ASSERT_TRUE(o["metrics"].contains(name)) << name;
      const double ours = o["metrics"][name].get<double>(), their = value.get<double>();
      std::cout << "[agreement] " << c.folder << " " << name << ": clipper " << ours
                << ", clip_benchmark " << their << "\n";
      EXPECT_NEAR(ours, their, kTolerance) << c.folder << " " << name;
    }
  }
}
