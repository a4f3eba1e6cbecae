// Retrieval recall@K with exact ties (duplicate captions, duplicate images): the true item's rank
// is its position in the sort, as open_clip_train's get_clip_metrics counts it, not the number
// of candidates that beat it strictly (which counts every tie in the model's favour).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <sstream>

#include "clipper/eval/eval.hpp"
#include "test_util.hpp"

namespace ce = clipper::eval;

TEST(RetrievalRecall, ADuplicateCaptionThatTiesCountsAgainstTheLaterPair) {
  // Texts 0 and 1 are the same caption, and so are images 0 and 1: pair 0's truth sorts first
  // among the tied, pair 1's second.
  const auto I = at::tensor({1.f, 0.f, 1.f, 0.f, 0.f, 1.f}).view({3, 2});
  const auto T = I.clone();
  const auto r = ce::retrieval_recall(I, T);
  EXPECT_EQ(r.count, 3);
  EXPECT_DOUBLE_EQ(r.image_to_text[0], 2.0 / 3);
  EXPECT_DOUBLE_EQ(r.text_to_image[0], 2.0 / 3);
  EXPECT_DOUBLE_EQ(r.image_to_text[1], 1.0);
  EXPECT_DOUBLE_EQ(r.text_to_image[2], 1.0);
}

TEST(RetrievalRecall, TiesCountAsOpenClipsGetClipMetrics) {
  // Small integer features: every dot product is exact, so duplicates tie exactly in any summation
  // order. N <= 16: torch's CPU sort orders ties by index there (its insertion sort), so
  // get_clip_metrics' ranks are defined, not an accident of the sort.
  const long n = 14, d = 3;
  std::mt19937 gen(5);
  std::uniform_int_distribution<int> pick(-2, 2);
  std::vector<float> v(2 * n * d);
  for (auto& x : v) x = static_cast<float>(pick(gen));
  auto row = [&](int which, long i) { return v.data() + (which * n + i) * d; };
  auto copy_row = [&](int which, long from, long to) {
    std::copy(row(which, from), row(which, from) + d, row(which, to));
  };
  std::fill(row(1, 0), row(1, 0) + d, 2.f);  // no other text scores higher with it
  copy_row(1, 0, 1);                         // captions 0, 1 and 2 are one caption
  copy_row(1, 0, 2);
  copy_row(1, 5, 9);  // and 5 and 9
  copy_row(0, 3, 4);  // images 3 and 4 are one image
  copy_row(0, 3, 11);
  for (long i : {0L, 1L, 2L}) std::copy(row(1, 0), row(1, 0) + d, row(0, i));  // they agree

  clipper::test::TempDir dir;
  std::ofstream(dir.file("in.bin"), std::ios::binary)
      .write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
  const auto py = clipper::test::run(
      clipper::test::python() + " " +
      clipper::test::source_path("tests/eval/openclip_retrieval.py") + " " + dir.file("in.bin") +
      " " + dir.file("out.txt") + " " + std::to_string(n) + " " + std::to_string(d));
  ASSERT_EQ(py.exit_code, 0) << py.output;
  std::ifstream in(dir.file("out.txt"));
  double want[6];
  for (auto& w : want) ASSERT_TRUE(in >> w);

  const auto all = at::from_blob(v.data(), {2 * n, d}, at::kFloat).clone();
  const auto r = ce::retrieval_recall(all.narrow(0, 0, n), all.narrow(0, n, n));
  for (int k = 0; k < 3; ++k) {
    EXPECT_DOUBLE_EQ(r.image_to_text[k], want[k]) << "image_to_text R@" << (k == 0 ? 1 : 5 * k);
    EXPECT_DOUBLE_EQ(r.text_to_image[k], want[3 + k]) << "text_to_image R@" << (k == 0 ? 1 : 5 * k);
  }
  // The ties matter here: counting only the strictly better candidates gives a higher R@1.
  const auto sim = all.narrow(0, 0, n).matmul(all.narrow(0, n, n).t());
  const auto strict = sim.gt(sim.diagonal().unsqueeze(1)).sum(1).lt(1).to(at::kDouble).mean();
  EXPECT_GT(strict.item<double>(), want[0]);
}
