// Agreement with CLIP_benchmark itself (label interop): small CLIP_benchmark-format folders made
// from the Fashion-MNIST test files (classification, multilabel, retrieval;
// tests/eval/clip_benchmark_folders.py), a tiny model trained for 60 steps and exported in
// OpenCLIP's format, then
// `clip_benchmark eval --model local-dir:EXPORT` (the pinned clip-benchmark 1.6.2, fp32: --no_amp;
// run through tests/eval/clip_benchmark_run.py, its NumPy 2 shim)
// and `clipper benchmark --weights EXPORT` on the same folders: every metric within 0.1 point;
// the linear probe (clip_benchmark's on the CPU, see clip_benchmark_run.py) within 3 points.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "test_util.hpp"

namespace {

constexpr double kTolerance = 0.001;  // 0.1 point: one sample in a thousand
// The linear probe: training images of the probe's train split and the tolerance of its figures
// (see the end of the test). No validation share: clip_benchmark's --val_proportion takes len() of
// its dataset, which its webdataset folders do not have, so both sides train with weight decay 0.
constexpr int kProbeTrain = 1000;
constexpr double kProbeTolerance = 0.03;

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
  // One folder holds all three, so one clip_benchmark command reaches each: --dataset_root
  // DATA/{dataset}, which it fills in with the name without "wds/".
  const std::string data = dir.file("data/wds");
  auto r = clipper::test::run(py + " " +
                              clipper::test::source_path("tests/eval/clip_benchmark_folders.py") +
                              " --out " + data + " --train " + std::to_string(kProbeTrain));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  // A tiny-fmnist-vit trained for a few steps on 2,048 training images (so its predictions are
  // not near-ties), exported by `clipper train` in OpenCLIP's format at the end of the run.
  const std::string fm = "/usr/share/datasets/fashion-mnist/";
  const std::string classes = clipper::test::source_path("configs/data/fashion_mnist.yaml");
  r = clipper::test::run(clipper::test::clipper_bin() + " shards " + dir.file("shards") +
                         " --prefix train --resize 0 --samples-per-shard 1024 --limit 2048" +
                         " --classes " + classes + " --from-idx " + fm +
                         "train-images-idx3-ubyte.gz " + fm + "train-labels-idx1-ubyte.gz");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto cfg =
      dir.write("run.yaml",
                "model: {name: tiny-fmnist-vit}\n"
                "data: {train_shards: '" +
                    dir.file("shards") +
                    "/train-{00000..00001}.tar', workers: 2}\n"
                    "train: {batch_size: 64, max_steps: 60, device: cpu, seed: 0, output_dir: '" +
                    dir.file("runs") +
                    "', run_name: r, threads: 2}\n"
                    "optim: {lr: 0.002, warmup_steps: 10}\n"
                    "log: {progress_every_s: 0}\n");
  r = clipper::test::run(clipper::test::clipper_bin() + " train " + cfg);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string exported = dir.file("runs/r/export");

  const std::vector<Case> cases = {{"fmnist_cls", "zeroshot_classification"},
                                   {"fmnist_multi", "zeroshot_classification"},
                                   {"fmnist_retr", "zeroshot_retrieval"}};
  const std::string ours_base = clipper::test::clipper_bin() +
                                " benchmark --device cpu --weights " + exported + " --output-dir " +
                                dir.file("ours");
  std::string ours_cmd = ours_base;
  for (const auto& c : cases) ours_cmd += " --dataset " + data + "/" + c.folder;
  r = clipper::test::run(ours_cmd);
  ASSERT_EQ(r.exit_code, 0) << ours_cmd << "\n" << r.output;
  std::cout << r.output;
  const std::string lp = " --linear-probe";
  r = clipper::test::run(ours_base + lp + " --dataset " + data + "/fmnist_cls");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::cout << r.output;

  // clip_benchmark: the three zero-shot folders and the linear probe in one Python process.
  const std::string common =
      " --dataset_root " + data + "/{dataset} --model local-dir:" + exported +
      " --pretrained none --no_amp --batch_size 64" + " --num_workers 0 --quiet --output " +
      dir.file("theirs") + "_{dataset}_{task}.json";
  const std::string cmd =
      py + " " + clipper::test::source_path("tests/eval/clip_benchmark_run.py") +
      " --cpu-linear-probe eval --dataset wds/fmnist_cls wds/fmnist_multi" +
      " --task zeroshot_classification" + common + " +++ eval --dataset wds/fmnist_retr" +
      " --task zeroshot_retrieval --recall_k 1 5 10" + common +
      " +++ eval --dataset wds/fmnist_cls --task linear_probe" + " --feature_root " +
      dir.file("features") + common;
  r = clipper::test::run(cmd);
  ASSERT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;

  for (const auto& c : cases) {
    const auto t = read_json(dir.file("theirs_" + c.folder + "_" + c.task + ".json"));
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

  // The linear probe: the same keys and settings; the figures within kProbeTolerance (the head's
  // training draws its shuffles and the validation share from torch's global generator in
  // clip_benchmark, from clipper's own seeded generator here, so the two heads differ by the
  // run-to-run spread of training a head, not by a difference of protocol).
  const auto t = read_json(dir.file("theirs_fmnist_cls_linear_probe.json"));
  const auto o = read_json(dir.file("ours/fmnist_cls_export_tiny-fmnist-vit_en_linear_probe.json"));
  EXPECT_EQ(o["task"], t["task"]);
  for (const auto& [name, value] : t["metrics"].items()) {
    ASSERT_TRUE(o["metrics"].contains(name)) << name;
    if (name.rfind("lp_", 0) != 0) {
      if (name != "weight_decay") EXPECT_EQ(o["metrics"][name], value) << name;
      continue;
    }
    const double ours = o["metrics"][name].get<double>(), their = value.get<double>();
    std::cout << "[agreement] fmnist_cls " << name << ": clipper " << ours << ", clip_benchmark "
              << their << "\n";
    EXPECT_NEAR(ours, their, kProbeTolerance) << "fmnist_cls " << name;
  }
  std::cout << "[agreement] fmnist_cls weight_decay: clipper " << o["metrics"]["weight_decay"]
            << ", clip_benchmark " << t["metrics"]["weight_decay"] << "\n";
}
