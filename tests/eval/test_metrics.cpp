// The benchmark metrics against hand-computed cases: ties (the lower index first), classes absent
// from the split, fewer than 5 classes, images without a caption, k past the candidates.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "clipper/core/error.hpp"
#include "clipper/eval/group_metrics.hpp"
#include "clipper/eval/linear_probe.hpp"
#include "clipper/eval/metrics.hpp"

namespace ce = clipper::eval;

namespace {

at::Tensor rows(std::initializer_list<std::initializer_list<float>> r) {
  std::vector<at::Tensor> out;
  for (const auto& row : r) out.push_back(at::tensor(std::vector<float>(row)));
  return at::stack(out);
}

at::Tensor labels(std::vector<std::int64_t> v) {
  return at::tensor(v, at::kLong);
}

}  // namespace

TEST(BenchmarkMetrics, FirstPositiveRankBreaksTiesByIndex) {
  const auto scores = rows({{0.5, 0.9, 0.9}, {1, 1, 1}, {0.2, 0.1, 0.3}});
  const auto pos = rows({{0, 0, 1}, {0, 1, 0}, {0, 0, 0}}).to(at::kBool);
  const auto r = ce::first_positive_rank(scores, pos);
  // Row 0: order 1, 2, 0 (1 before 2 in the tie), the positive 2 second. Row 1: all tie, order
  // 0, 1, 2. Row 2: no positive.
  EXPECT_EQ(r[0].item<std::int64_t>(), 1);
  EXPECT_EQ(r[1].item<std::int64_t>(), 1);
  EXPECT_EQ(r[2].item<std::int64_t>(), std::numeric_limits<std::int64_t>::max());
}

TEST(BenchmarkMetrics, ClassificationByHand) {
  // 6 classes; the split holds classes 0, 1, 2 only.
  const auto logits = rows({
      {0.9, 0.1, 0, 0, 0, 0},          // class 0: first
      {0.1, 0.5, 0.6, 0.7, 0.9, 0.8},  // class 0: last (6th), predicted 4 (absent from split)
      {0.5, 0.5, 0.5, 0.1, 0.1, 0.1},  // class 2: tied with 0 and 1, comes third
      {0, 1, 0, 0, 0, 0},              // class 1: first
  });
  const auto m = ce::classification_metrics(logits, labels({0, 0, 2, 1}));
  EXPECT_DOUBLE_EQ(m.acc1, 0.5);
  ASSERT_TRUE(m.acc5.has_value());
  EXPECT_DOUBLE_EQ(*m.acc5, 0.75);
  // Recall of class 0: 1/2, class 1: 1/1, class 2: 0/1; classes 3-5 have no sample and do not
  // count (predicted class 4 included): (0.5 + 1 + 0) / 3.
  EXPECT_DOUBLE_EQ(m.mean_per_class_recall, 0.5);
}

TEST(BenchmarkMetrics, FewerThanFiveClassesHaveNoAcc5) {
  const auto logits = rows({{0.1, 0.8, 0.1, 0}, {0.7, 0.2, 0.1, 0}, {0, 0, 0.3, 0.6}});
  const auto m = ce::classification_metrics(logits, labels({1, 1, 3}));
  EXPECT_FALSE(m.acc5.has_value());
  EXPECT_DOUBLE_EQ(m.acc1, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(m.mean_per_class_recall, (0.5 + 1.0) / 2);  // classes 1 and 3 present
  const auto five = ce::classification_metrics(rows({{1, 0, 0, 0, 0}}), labels({4}));
  ASSERT_TRUE(five.acc5.has_value());  // exactly 5 classes: acc5 is reported
  EXPECT_DOUBLE_EQ(*five.acc5, 1.0);
  EXPECT_DOUBLE_EQ(five.acc1, 0.0);  // the tie of 1..4 puts class 4 last
}

TEST(BenchmarkMetrics, ClassificationRejectsLabelsOutsideTheClasses) {
  EXPECT_THROW(ce::classification_metrics(rows({{1, 0}}), labels({2})), clipper::core::InputError);
  EXPECT_THROW(ce::classification_metrics(rows({{1, 0}}), labels({0, 1})),
               clipper::core::InputError);
}

TEST(BenchmarkMetrics, MeanAveragePrecisionByHand) {
  // Class 0: positives at ranks 1 and 3: (1/1 + 2/3) / 2. Class 1: no positive: 0.
  // Class 2: all scores tie; in sample order the one positive (sample 1) comes second: 1/2.
  const auto scores = rows({{0.9, 0.1, 0.5}, {0.8, 0.2, 0.5}, {0.7, 0.3, 0.5}, {0.6, 0.4, 0.5}});
  const auto targets = rows({{1, 0, 0}, {0, 0, 1}, {1, 0, 0}, {0, 0, 0}});
  const double expected = ((1.0 + 2.0 / 3.0) / 2 + 0.0 + 0.5) / 3;
  EXPECT_NEAR(ce::mean_average_precision(scores, targets), expected, 1e-12);
  EXPECT_THROW(ce::mean_average_precision(scores, rows({{1, 0}})), clipper::core::InputError);
}

TEST(BenchmarkMetrics, RetrievalAnyPositiveWithinK) {
  // Images e0, e1, e2; texts 0 and 1 describe image 0, texts 2 and 3 image 1, image 2 has none.
  const auto images = rows({{1, 0, 0}, {0, 1, 0}, {0, 0, 1}});
  const auto texts = rows({{0, 1, 0}, {1, 0, 0}, {1, 0, 0}, {0, 0, 1}});
  const auto m = ce::retrieval_metrics(images, texts, labels({0, 0, 1, 1}), {1, 2, 3, 5});
  // Text -> images: t0 ranks image 1, then 0 and 2 tied (0 first): its image second. t1: first.
  // t2: image 0, then 1 and 2 tied: second. t3: image 2, then 0, 1: third.
  EXPECT_DOUBLE_EQ(m.image_retrieval[0], 0.25);
  EXPECT_DOUBLE_EQ(m.image_retrieval[1], 0.75);
  EXPECT_DOUBLE_EQ(m.image_retrieval[2], 1.0);
  EXPECT_DOUBLE_EQ(m.image_retrieval[3], 1.0);  // k past the 3 images
  // Image -> texts: image 0 scores t1, t2 highest (tie, t1 first): a positive first. Image 1
  // scores t0 only; then t1, t2, t3 tied: its first text (t2) third. Image 2: never found.
  EXPECT_DOUBLE_EQ(m.text_retrieval[0], 1.0 / 3);
  EXPECT_DOUBLE_EQ(m.text_retrieval[1], 1.0 / 3);
  EXPECT_DOUBLE_EQ(m.text_retrieval[2], 2.0 / 3);
  EXPECT_DOUBLE_EQ(m.text_retrieval[3], 2.0 / 3);
}

TEST(BenchmarkMetrics, RetrievalRejectsMismatchedOwners) {
  EXPECT_THROW(ce::retrieval_metrics(rows({{1, 0}}), rows({{1, 0}}), labels({0, 0}), {1}),
               clipper::core::InputError);
}

namespace {

// `n` points per class around 3 well-separated centres in 4-D, normalized like image features.
std::pair<at::Tensor, at::Tensor> clusters(std::int64_t n, std::uint64_t seed) {
  at::manual_seed(seed);
  const auto centres = rows({{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}});
  std::vector<at::Tensor> x, y;
  for (std::int64_t c = 0; c < 3; ++c) {
    x.push_back(centres[c].unsqueeze(0) + 0.1 * at::randn({n, 4}));
    y.push_back(at::full({n}, c, at::kLong));
  }
  auto X = at::cat(x);
  return {X / X.pow(2).sum(1, true).sqrt(), at::cat(y)};
}

}  // namespace

TEST(LinearProbe, SeparableClustersWithWeightDecaySweep) {
  const auto [x, y] = clusters(20, 1);
  const auto [vx, vy] = clusters(10, 2);
  const auto [tx, ty] = clusters(10, 3);
  ce::LinearProbeOptions o;
  o.batch_size = 16;
  const auto r = ce::linear_probe(x, y, vx, vy, tx, ty, o);
  EXPECT_DOUBLE_EQ(r.metrics.acc1, 1.0);
  EXPECT_FALSE(r.metrics.acc5.has_value());  // 3 classes
  EXPECT_DOUBLE_EQ(r.metrics.mean_per_class_recall, 1.0);
  // The chosen weight decay is one of numpy.logspace(-6, 2, 97).
  const double e = std::log10(r.weight_decay);
  EXPECT_NEAR((e + 6) * 12, std::round((e + 6) * 12), 1e-9) << r.weight_decay;
  // Same seed, same head.
  const auto a = ce::train_linear_head(x, y, 3, 0.01, o, tx);
  EXPECT_TRUE(at::equal(a, ce::train_linear_head(x, y, 3, 0.01, o, tx)));
}

TEST(LinearProbe, FewShotNeedsKPerClass) {
  const auto [x, y] = clusters(3, 1);
  ce::LinearProbeOptions o;
  o.fewshot_k = 2;
  const auto r = ce::linear_probe(x, y, {}, {}, x, y, o);
  EXPECT_EQ(r.weight_decay, 0.0);  // no validation split: no sweep
  o.fewshot_k = 4;
  EXPECT_THROW(ce::linear_probe(x, y, {}, {}, x, y, o), clipper::core::InputError);
}

TEST(DataCompMetrics, MacroF1OverTheClassesOfTheSplit) {
  // Class 0: tp 2, fn 1 -> 4/5. Class 1: tp 1, fp 1 -> 2/3. Class 2: never right -> 0. Class 3 is
  // predicted but absent from the split: not averaged (sklearn's labels=None would give / 4).
  const auto f1 = ce::macro_f1(labels({0, 0, 1, 1, 3}), labels({0, 0, 0, 1, 2}));
  EXPECT_NEAR(f1, (0.8 + 2.0 / 3.0 + 0.0) / 3, 1e-12);
  EXPECT_DOUBLE_EQ(ce::macro_f1(labels({1, 1}), labels({1, 1})), 1.0);
  EXPECT_THROW(ce::macro_f1(labels({1}), labels({1, 0})), clipper::core::InputError);
}

TEST(DataCompMetrics, TopKHitsBreakTiesByIndex) {
  const auto logits = rows({{0.5, 0.5, 0.5}, {0.1, 0.2, 0.3}});
  // Row 0 ties: order 0, 1, 2; class 2 is third. Row 1: order 2, 1, 0; class 1 second.
  EXPECT_TRUE(
      at::equal(ce::top_k_hits(logits, labels({2, 1}), 2), at::tensor({0.0, 1.0}, at::kDouble)));
  EXPECT_TRUE(at::equal(ce::top_k_hits(logits, labels({2, 0}), 5),  // k past the classes
                        at::tensor({1.0, 1.0}, at::kDouble)));
}

TEST(DataCompMetrics, WorstGroupSkipsEmptyGroups) {
  // Groups 0..3; group 1 has no sample (mean 0, count 0) and is not the worst.
  const auto g =
      ce::group_means(at::tensor({1.0, 0.0, 1.0, 1.0, 1.0}, at::kDouble), labels({0, 0, 2, 2, 3}));
  EXPECT_EQ(g.count, (std::vector<std::int64_t>{2, 0, 2, 1}));
  EXPECT_EQ(g.mean, (std::vector<double>{0.5, 0.0, 1.0, 1.0}));
  EXPECT_DOUBLE_EQ(g.worst, 0.5);
  EXPECT_THROW(ce::group_means(at::tensor({1.0}, at::kDouble), labels({-1})),
               clipper::core::InputError);
}

TEST(DataCompMetrics, EvaluatorsNameTheirMetricsAsDataComp) {
  // 6 classes, 4 samples; metadata rows [region, year, y] (FMoW) / [income_ds, meta, region].
  const auto logits = rows({{0.9, 0.1, 0, 0, 0, 0},      // class 0: first
                            {0.5, 0.5, 0, 0, 0, 0},      // class 1: tied with 0, second
                            {0, 0, 0, 0, 0.2, 0.1},      // class 5: second
                            {0, 0, 0, 0.1, 0.2, 0.3}});  // class 0: fourth
  const auto target = labels({0, 1, 5, 0});
  const auto meta = rows({{0, 2, 0}, {2, 0, 1}, {2, 2, 5}, {0, 0, 0}});
  const auto fmow = ce::group_metrics(ce::GroupEval::fmow, logits, target, meta);
  // Top-1 hits: 1, 0, 0, 0. Regions 0 (samples 0, 3): 0.5; 1: empty; 2: 0. Years alike.
  EXPECT_DOUBLE_EQ(fmow["acc_avg"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(fmow["acc_region:0"].get<double>(), 0.5);
  EXPECT_EQ(fmow["count_region:1"].get<std::int64_t>(), 0);
  EXPECT_DOUBLE_EQ(fmow["acc_worst_region"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(fmow["acc_year:2"].get<double>(), 0.5);  // samples 0 and 2
  EXPECT_DOUBLE_EQ(fmow["acc_worst_year"].get<double>(), 0.0);
  // Top-5 hits: 1, 1, 1, 1 (class 0 of sample 3 is fourth). Income groups 0 and 2.
  const auto ds = ce::group_metrics(ce::GroupEval::dollar_street, logits, target, meta);
  EXPECT_DOUBLE_EQ(ds["acc_top5_avg"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(ds["acc_top5_wg"].get<double>(), 1.0);
  EXPECT_EQ(ds["count_income_ds:2"].get<std::int64_t>(), 2);
  const auto geode = ce::group_metrics(ce::GroupEval::geode, logits, target, meta);
  EXPECT_DOUBLE_EQ(geode["acc_wg"].get<double>(), 0.0);  // region 2: samples 1, 2 both wrong
  // iWildCam: predictions 0, 0 (tie: the lower index), 4, 5. Class 0: tp 1, fp 1, fn 1 -> 1/2;
  // classes 1 and 5: 0. Class 4, predicted, is absent from the split and not averaged.
  const auto iw = ce::group_metrics(ce::GroupEval::iwildcam, logits, target, {});
  EXPECT_NEAR(iw["F1-macro_all"].get<double>(), 0.5 / 3, 1e-12);
  EXPECT_NEAR(iw["recall-macro_all"].get<double>(), 0.5 / 3, 1e-12);
  EXPECT_THROW(ce::group_metrics(ce::GroupEval::fmow, logits, target, rows({{0, 0}})),
               clipper::core::InputError);
}
