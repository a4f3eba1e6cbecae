// CLIP_benchmark webdataset folders: metadata, the three kinds of sample, the split across ranks,
// no sizes.json needed, and an InputError naming the file or sample for each bad input.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <thread>

#include "clipper/core/error.hpp"
#include "clipper/data/image.hpp"
#include "clipper/data/shard_writer.hpp"
#include "clipper/eval/benchmark.hpp"
#include "clipper/eval/benchmark_dataset.hpp"
#include "clipper/io/npy.hpp"
#include "test_util.hpp"

namespace ce = clipper::eval;
namespace cd = clipper::data;
using Files = std::vector<std::pair<std::string, std::string>>;

namespace {

std::string jpeg(int seed) {
  cd::Image im;
  im.width = 12;
  im.height = 10;
  im.channels = 3;
  for (int i = 0; i < 12 * 10 * 3; ++i)
    im.pixels.push_back(static_cast<std::uint8_t>(seed * 20 + i));
  return cd::encode_jpeg(im, 90);
}

std::string npy_bytes(const clipper::test::TempDir& dir, const at::Tensor& v) {
  clipper::io::save_npy(dir.file("v.npy"), v);
  std::ifstream in(dir.file("v.npy"), std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Writes <root>/test/0.tar .. with `per_shard` samples each (keys s%07d) and nshards.txt, the way
// CLIP_benchmark's exporter names them (no sizes.json).
void write_split(const std::string& root, const std::vector<Files>& samples, int per_shard) {
  cd::ShardWriterOptions o;
  o.out_dir = root + "/test";
  o.prefix = "x";
  o.samples_per_shard = per_shard;
  o.progress_every_s = 0;
  o.resume = false;
  std::int64_t shards = 0;
  {
    cd::ShardWriter w(o);
    char key[16];
    for (std::size_t i = 0; i < samples.size(); ++i) {
      std::snprintf(key, sizeof key, "s%07zu", i);
      w.write(key, samples[i]);
    }
    shards = static_cast<std::int64_t>(w.finish().shards.size());
    for (std::int64_t s = 0; s < shards; ++s)
      std::rename((o.out_dir + "/" + w.shard_name(s)).c_str(),
                  (o.out_dir + "/" + std::to_string(s) + ".tar").c_str());
  }
  std::remove((o.out_dir + "/sizes.json").c_str());
  std::ofstream(o.out_dir + "/nshards.txt") << shards << "\n";
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

}  // namespace

TEST(BenchmarkDataset, ClassificationAcrossRanksWithoutSizes) {
  clipper::test::TempDir dir;
  const std::string root = dir.file("cls");
  std::vector<Files> samples;
  for (int i = 0; i < 7; ++i)
    samples.push_back({{"jpg", jpeg(i)}, {"cls", std::to_string(i % 3) + "\n"}});
  write_split(root, samples, 3);
  write_text(root + "/classnames.txt", "cat\n dog \nbird\n");
  write_text(root + "/zeroshot_classification_templates.txt", "a photo of a {c}.\n{c}\n");
  const auto d = ce::open_benchmark_dataset(root);
  EXPECT_EQ(d.name, "wds/cls");
  EXPECT_EQ(d.kind, ce::DatasetKind::classification);
  EXPECT_EQ(d.classnames, (std::vector<std::string>{"cat", "dog", "bird"}));
  EXPECT_EQ(d.templates.size(), 2u);
  EXPECT_EQ(d.shards("test").size(), 3u);

  // Rank 1 of 2 gets samples 1, 3, 5: labels 1, 0, 2.
  ce::ReaderOptions o;
  o.image_size = 8;
  o.batch_size = 2;
  o.rank = 1;
  o.world_size = 2;
  ce::BenchmarkReader r(d, "test", o);
  std::vector<std::int64_t> got;
  while (auto b = r.next()) {
    EXPECT_EQ(b->images.sizes().vec(), (std::vector<std::int64_t>{b->labels.size(0), 8, 8, 3}));
    for (std::int64_t i = 0; i < b->labels.size(0); ++i)
      got.push_back(b->labels[i].item<std::int64_t>());
  }
  EXPECT_EQ(got, (std::vector<std::int64_t>{1, 0, 2}));
  EXPECT_EQ(r.samples(), 3);
}

TEST(BenchmarkDataset, MultilabelAndRetrieval) {
  clipper::test::TempDir dir;
  const std::string multi = dir.file("multi"), retr = dir.file("retr");
  write_split(multi,
              {{{"png", jpeg(1)}, {"npy", npy_bytes(dir, at::tensor({1, 0, 1}, at::kByte))}},
               {{"webp", jpeg(2)}, {"npy", npy_bytes(dir, at::tensor({0.f, 1.f, 0.f}))}}},
              5);
  // Both "png" and "webp" entries hold JPEG bytes: the decoder goes by content.
  write_text(multi + "/dataset_type.txt", "Multilabel\n");
  write_text(multi + "/classnames.txt", "a\nb\nc\n");
  const auto m = ce::open_benchmark_dataset(multi);
  EXPECT_EQ(m.kind, ce::DatasetKind::multilabel);
  EXPECT_EQ(m.templates.size(), 80u);  // no templates file: OpenAI's ImageNet templates
  ce::ReaderOptions o;
  o.image_size = 8;
  ce::BenchmarkReader rm(m, "test", o);
  auto b = rm.next();
  ASSERT_TRUE(b);
  EXPECT_TRUE(at::equal(b->multilabels, at::tensor({1.f, 0.f, 1.f, 0.f, 1.f, 0.f}).view({2, 3})));

  write_split(retr,
              {{{"jpg", jpeg(3)}, {"txt", "one\ntwo"}}, {{"jpg", jpeg(4)}, {"txt", "three\n"}}}, 5);
  write_text(retr + "/dataset_type.txt", "retrieval");
  const auto d = ce::open_benchmark_dataset(retr);
  EXPECT_EQ(d.kind, ce::DatasetKind::retrieval);
  ce::BenchmarkReader rr(d, "test", o);
  auto c = rr.next();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->captions, (std::vector<std::vector<std::string>>{{"one", "two"}, {"three"}}));
  EXPECT_FALSE(rr.next());
}

TEST(BenchmarkDataset, BadInputsNameTheirPlace) {
  clipper::test::TempDir dir;
  const std::string root = dir.file("bad");
  const auto expect_error = [&](const std::string& must_contain) {
    try {
      const auto d = ce::open_benchmark_dataset(root);
      ce::ReaderOptions o;
      o.image_size = 8;
      ce::BenchmarkReader r(d, "test", o);
      while (r.next()) {
      }
      ADD_FAILURE() << "no error; expected one naming " << must_contain;
    } catch (const clipper::core::InputError& e) {
      EXPECT_NE(std::string(e.what()).find(must_contain), std::string::npos) << e.what();
    }
  };
  write_split(root, {{{"jpg", jpeg(1)}, {"cls", "1"}}}, 5);
  expect_error("classnames.txt");  // none, and no --classnames
  write_text(root + "/classnames.txt", "a\n");
  expect_error("outside 0..0");  // label 1 of one class
  write_split(root, {{{"jpg", jpeg(1)}, {"cls", "x1"}}}, 5);
  expect_error("s0000000");
  write_split(root, {{{"cls", "0"}}}, 5);
  expect_error("has no .webp, .png, .jpg or .jpeg image");
  write_split(root, {{{"jpg", "not an image"}, {"cls", "0"}}}, 5);
  expect_error("cannot be decoded");
  write_text(root + "/test/nshards.txt", "3\n");
  expect_error("1.tar is missing");
  write_text(root + "/dataset_type.txt", "captions\n");
  expect_error("dataset_type.txt: unknown dataset type 'captions'");
  std::remove((root + "/dataset_type.txt").c_str());
  std::remove((root + "/test/nshards.txt").c_str());
  expect_error("nshards.txt is missing");
  EXPECT_THROW(ce::parse_npy_vector(std::string("\x93NUMPY\x01\x00\x05\x00{'de", 14), "s1"),
               clipper::core::InputError);
}

TEST(BenchmarkDataset, BuiltinImagenetListsAndOverrides) {
  const auto names = ce::builtin_list("imagenet1k", "classnames");
  ASSERT_EQ(names.size(), 1000u);
  EXPECT_EQ(names.front(), "tench");
  EXPECT_EQ(ce::builtin_list("imagenet1k", "templates").size(), 80u);
  clipper::test::TempDir dir;
  const std::string root = dir.file("in1k");
  write_split(root, {{{"jpg", jpeg(1)}, {"cls", "999"}}}, 5);
  const auto d = ce::open_benchmark_dataset(root, {"imagenet1k", ""});
  EXPECT_EQ(d.classnames.size(), 1000u);
  EXPECT_EQ(ce::fill_template("a photo of a {c}.", "dog"), "a photo of a dog.");
  EXPECT_EQ(ce::fill_template("a photo of a {}.", "dog"), "a photo of a dog.");
  EXPECT_EQ(ce::fill_template("photo", "dog"), "photo dog");
}

TEST(BenchmarkDataset, ResultFilesFollowClipBenchmarkNaming) {
  ce::BenchmarkResult r;
  r.dataset = "wds/imagenet1k";
  r.task = "zeroshot_classification";
  r.metrics["acc1"] = 0.5;
  r.metrics["acc5"] = nullptr;
  EXPECT_EQ(ce::result_file_name(r, "ViT-B-32", "/runs/a/export/", "en"),
            "imagenet1k_export_ViT-B-32_en_zeroshot_classification.json");
  const auto j = ce::result_json(r, "ViT-B-32", "/runs/a/export", "en");
  EXPECT_EQ(
      j.dump(),
      R"({"dataset":"wds/imagenet1k","model":"ViT-B-32","pretrained":"/runs/a/export",)"
      R"("task":"zeroshot_classification","metrics":{"acc1":0.5,"acc5":null},"language":"en"})");
  clipper::test::TempDir dir;
  const auto suite = dir.write("suite.txt", "# my suite\nfolder_a\n\n/abs/folder_b\n");
  const auto s = ce::read_suite(suite);
  ASSERT_EQ(s.tasks.size(), 2u);
  EXPECT_EQ(s.tasks[0].folder, dir.file("folder_a"));
  EXPECT_EQ(s.tasks[1].folder, "/abs/folder_b");
}

TEST(BenchmarkSuite, DataCompTasksMetricsAndAggregates) {
  clipper::test::TempDir dir;
  dir.write("wds_imagenet1k_test/test/nshards.txt", "1\n");
  const auto s = ce::read_suite("datacomp", dir.path().string());
  EXPECT_EQ(s.name, "datacomp");
  ASSERT_EQ(s.tasks.size(), 38u);
  std::size_t run = 0;
  for (const auto& t : s.tasks) run += t.skip.empty();
  EXPECT_EQ(run, 1u);  // only ImageNet's folder exists here; the others say why they are skipped
  // DataComp's group metrics run through its evaluators; only WinoGAViL is skipped by the suite.
  std::map<std::string, const ce::SuiteTask*> by_name;
  for (const auto& t : s.tasks) by_name[t.name] = &t;
  EXPECT_EQ(by_name.at("iWildCam")->evaluator, ce::GroupEval::iwildcam);
  EXPECT_EQ(by_name.at("FMoW")->evaluator, ce::GroupEval::fmow);
  EXPECT_EQ(by_name.at("Dollar Street")->evaluator, ce::GroupEval::dollar_street);
  EXPECT_EQ(by_name.at("GeoDE")->evaluator, ce::GroupEval::geode);
  EXPECT_EQ(by_name.at("GeoDE")->main_metric, "acc_wg");
  for (const auto& t : s.tasks)
    if (t.name != "ImageNet 1k")
      EXPECT_EQ(
          t.skip.rfind(t.name == "WinoGAViL" ? "WinoGAViL is a Hugging Face" : "no folder", 0), 0u)
          << t.name << ": " << t.skip;
  ASSERT_EQ(s.groups.size(), 4u);
  EXPECT_EQ(s.groups[2].first, "VTAB");
  EXPECT_EQ(s.groups[2].second.size(), 13u);

  nlohmann::ordered_json retr;
  retr["image_retrieval_recall@1"] = 0.4;
  retr["text_retrieval_recall@1"] = 0.6;
  EXPECT_DOUBLE_EQ(*ce::metric_value(retr, "mean_recall@1"), 0.5);
  EXPECT_FALSE(ce::metric_value(retr, "acc1").has_value());

  const auto agg = ce::aggregate_scores(
      s, {{"ImageNet 1k", 0.6}, {"ImageNet v2", 0.5}, {"ImageNet-R", 0.7}, {"Flickr", 0.5}});
  EXPECT_DOUBLE_EQ(agg["ImageNet"]["score"].get<double>(), 0.6);
  EXPECT_DOUBLE_EQ(agg["ImageNet dist. shifts"]["score"].get<double>(), 0.6);
  EXPECT_EQ(agg["ImageNet dist. shifts"]["tasks"], 2);
  EXPECT_EQ(agg["ImageNet dist. shifts"]["of"], 6);
  EXPECT_TRUE(agg["VTAB"]["score"].is_null());
  EXPECT_DOUBLE_EQ(agg["Average"]["score"].get<double>(), 0.575);
  EXPECT_EQ(agg["Average"]["of"], 38);
}

TEST(BenchmarkDataset, ClassPerSubfolderTree) {
  clipper::test::TempDir dir;
  const std::string root = dir.file("tree");
  dir.write("tree/val/a_cat/2.JPG", jpeg(1));
  dir.write("tree/val/a_cat/1.jpeg", jpeg(2));
  dir.write("tree/val/a_cat/notes.txt", "not an image");
  dir.write("tree/val/b_dog/x.jpg", jpeg(3));
  write_text(root + "/classnames.txt", "cat\ndog\n");
  const auto d = ce::open_benchmark_dataset(root);
  EXPECT_TRUE(d.is_tree("val"));
  const auto files = d.tree_files("val");
  ASSERT_EQ(files.size(), 3u);
  EXPECT_EQ(files[0].first, root + "/val/a_cat/1.jpeg");
  ce::ReaderOptions o;
  o.image_size = 8;
  ce::BenchmarkReader r(d, "val", o);
  auto b = r.next();
  ASSERT_TRUE(b);
  EXPECT_TRUE(at::equal(b->labels, at::tensor({0, 0, 1}, at::kLong)));
  write_text(root + "/classnames.txt", "cat\ndog\nbird\n");
  EXPECT_THROW(ce::open_benchmark_dataset(root).tree_files("val"), clipper::core::InputError);
}

TEST(BenchmarkSuite, PlanOpensEveryFolderFirstAndListsSkips) {
  EXPECT_THROW(ce::plan_suite({}, {}, {}), clipper::core::InputError);
  clipper::test::TempDir dir;
  // No folder of the suite under the root: nothing to run is an error, not an empty success.
  EXPECT_THROW(ce::plan_suite({}, ce::read_suite("datacomp", dir.path().string()), {}),
               clipper::core::InputError);
  dir.write("wds_imagenet1k_test/test/nshards.txt", "1\n");
  dir.write("wds_imagenet1k_test/classnames.txt", "a\nb\n");
  const auto plan = ce::plan_suite({}, ce::read_suite("datacomp", dir.path().string()), {});
  ASSERT_EQ(plan.run.size(), 1u);
  EXPECT_EQ(plan.run[0].first.name, "ImageNet 1k");
  EXPECT_EQ(plan.run[0].second.classnames.size(), 2u);
  EXPECT_EQ(plan.skipped.size(), 37u);
  // A --dataset folder that is not a dataset fails the plan, before any model is loaded.
  EXPECT_THROW(ce::plan_suite({dir.file("nothing")}, {}, {}), clipper::core::InputError);
}

// DataComp's WILDS and fairness folders: .cls and an .npy metadata row per sample, read when the
// suite names the task's evaluator; a missing or bad row names the sample.
TEST(BenchmarkSuite, EvaluatorReadsTheNpyMetadataOfDataCompFolders) {
  clipper::test::TempDir dir;
  const std::string root = dir.file("wds_wilds-fmow_test");
  std::vector<Files> samples;
  for (int i = 0; i < 3; ++i)  // [region, year, y] as int64, as WILDS's metadata arrays
    samples.push_back({{"webp", jpeg(i)},
                       {"cls", std::to_string(i)},
                       {"npy", npy_bytes(dir, at::tensor({4 - i, 10 + i, i}, at::kLong))}});
  write_split(root, samples, 2);
  write_text(root + "/classnames.txt", "a\nb\nc\n");
  write_text(dir.file("suite.yaml"),
             "tasks:\n"
             "  - {name: FMoW, folder: wds_wilds-fmow_test, main_metric: acc_worst_region,\n"
             "     evaluator: wilds/fmow}\n");
  const auto plan = ce::plan_suite({}, ce::read_suite(dir.file("suite.yaml")), {});
  ASSERT_EQ(plan.run.size(), 1u);
  const auto& d = plan.run[0].second;
  EXPECT_EQ(d.group_eval, ce::GroupEval::fmow);
  ce::ReaderOptions o;
  o.image_size = 8;
  o.batch_size = 5;
  ce::BenchmarkReader r(d, "test", o);
  const auto b = r.next();
  ASSERT_TRUE(b);
  EXPECT_TRUE(at::equal(b->metadata,
                        at::tensor({4.f, 10.f, 0.f, 3.f, 11.f, 1.f, 2.f, 12.f, 2.f}).view({3, 3})));
  // Without the evaluator the .npy entries are not read (a plain classification folder).
  EXPECT_FALSE(
      ce::BenchmarkReader(ce::open_benchmark_dataset(root), "test", o).next()->metadata.defined());
  const auto expect_error = [&](const std::vector<Files>& bad, const std::string& must_contain) {
    write_split(root, bad, 2);
    try {
      ce::BenchmarkReader reader(d, "test", o);
      while (reader.next()) {
      }
      ADD_FAILURE() << "no error; expected one naming " << must_contain;
    } catch (const clipper::core::InputError& e) {
      EXPECT_NE(std::string(e.what()).find(must_contain), std::string::npos) << e.what();
    }
  };
  expect_error({samples[0], {{"jpg", jpeg(1)}, {"cls", "1"}}},
               "sample 's0000001' has no .npy metadata entry (wilds/fmow");
  expect_error({{{"jpg", jpeg(1)}, {"cls", "1"}, {"npy", npy_bytes(dir, at::tensor({1, 2}))}}},
               "has 2 entries, wilds/fmow reads 3 (region, year, y)");
  expect_error({{{"jpg", jpeg(1)}, {"cls", "1"}, {"npy", npy_bytes(dir, at::tensor({-1, 2, 1}))}}},
               "field 'region' is -1");
  write_text(root + "/dataset_type.txt", "multilabel\n");  // an evaluator needs .cls labels
  EXPECT_THROW(ce::plan_suite({}, ce::read_suite(dir.file("suite.yaml")), {}),
               clipper::core::InputError);
  write_text(dir.file("suite.yaml"), "tasks:\n  - {folder: x, evaluator: wilds/camelyon}\n");
  EXPECT_THROW(ce::read_suite(dir.file("suite.yaml")), clipper::core::InputError);
}

// Decoding the next batch while the current one is encoded hands out the same batches, bit for
// bit, in the same order, with samples() counting only the batches handed out; a bad image is
// still thrown by the call that asks for its batch.
TEST(BenchmarkDataset, OverlappedDecodeGivesTheSameBatches) {
  clipper::test::TempDir dir;
  const std::string root = dir.file("cls");
  std::vector<Files> samples;
  for (int i = 0; i < 11; ++i)
    samples.push_back({{"jpg", jpeg(i)}, {"cls", std::to_string(i % 3)}});
  write_split(root, samples, 4);
  write_text(root + "/classnames.txt", "a\nb\nc\n");
  const auto d = ce::open_benchmark_dataset(root);
  const auto read_all = [&](bool overlap, int rank) {
    ce::ReaderOptions o;
    o.image_size = 8;
    o.batch_size = 2;
    o.rank = rank;
    o.world_size = 2;
    o.overlap = overlap;
    ce::BenchmarkReader r(d, "test", o);
    std::vector<ce::BenchmarkBatch> out;
    while (auto b = r.next()) {
      out.push_back(*b);
      // Time for the batch decoded ahead to be done: it must not count until it is handed out.
      if (overlap) std::this_thread::sleep_for(std::chrono::milliseconds(30));
      EXPECT_EQ(r.samples(), 2 * static_cast<std::int64_t>(out.size()) - (b->labels.size(0) < 2));
    }
    return out;
  };
  for (int rank = 0; rank < 2; ++rank) {
    const auto plain = read_all(false, rank), overlapped = read_all(true, rank);
    ASSERT_EQ(plain.size(), overlapped.size());
    ASSERT_EQ(plain.size(), 3u);  // 6 and 5 samples in batches of 2
    for (std::size_t i = 0; i < plain.size(); ++i) {
      EXPECT_TRUE(at::equal(plain[i].images, overlapped[i].images)) << i;
      EXPECT_TRUE(at::equal(plain[i].labels, overlapped[i].labels)) << i;
      EXPECT_EQ(plain[i].keys, overlapped[i].keys) << i;
    }
  }
  samples[6] = {{"jpg", "not an image"}, {"cls", "0"}};  // rank 0's 4th sample: its 2nd batch
  write_split(root, samples, 4);
  ce::ReaderOptions o;
  o.image_size = 8;
  o.batch_size = 2;
  o.world_size = 2;
  ce::BenchmarkReader r(d, "test", o);
  EXPECT_TRUE(r.next());
  try {
    r.next();
    ADD_FAILURE() << "the bad image of the second batch was not reported";
  } catch (const clipper::core::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("s0000006"), std::string::npos) << e.what();
  }
}
