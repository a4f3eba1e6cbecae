// SigLIP 2's extra terms (LocCa decoder loss, SILC self-distillation, masked prediction) against
// their definitions written out with scalar loops on small tensors: values, and gradients
// against the closed forms of the cross-entropy's derivative (softmax minus target over the
// count), an independent computation from autograd's.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "clipper/core/error.hpp"
#include "clipper/loss/siglip2_loss.hpp"

namespace {

namespace loss = clipper::loss;
const auto kF32 = at::TensorOptions().dtype(at::kFloat);
const auto kI64 = at::TensorOptions().dtype(at::kLong);

at::Tensor ints(std::vector<std::vector<std::int64_t>> rows) {
  const auto b = static_cast<std::int64_t>(rows.size());
  const auto l = static_cast<std::int64_t>(rows[0].size());
  auto t = at::empty({b, l}, kI64);
  for (std::int64_t i = 0; i < b; ++i)
    for (std::int64_t j = 0; j < l; ++j) t[i][j] = rows[i][j];
  return t;
}

std::vector<double> softmax_row(const at::Tensor& row, double temp, const at::Tensor& center = {}) {
  const auto k = row.size(0);
  std::vector<double> z(k), p(k);
  double mx = -1e300, sum = 0;
  for (std::int64_t j = 0; j < k; ++j) {
    z[j] = (row[j].item<double>() - (center.defined() ? center[j].item<double>() : 0.0)) / temp;
    mx = std::max(mx, z[j]);
  }
  for (std::int64_t j = 0; j < k; ++j) sum += (p[j] = std::exp(z[j] - mx));
  for (auto& v : p) v /= sum;
  return p;
}

// The token cross-entropy written out: per valid position lse - logit[label], averaged; the
// gradient (softmax - onehot) / count at valid positions.
std::pair<double, at::Tensor> token_ce_by_hand(const at::Tensor& logits, const at::Tensor& labels) {
  auto grad = at::zeros(logits.sizes(), at::TensorOptions().dtype(at::kDouble));
  double total = 0;
  int count = 0;
  for (std::int64_t b = 0; b < labels.size(0); ++b)
    for (std::int64_t t = 0; t < labels.size(1); ++t)
      if (labels[b][t].item<std::int64_t>() != loss::kIgnoreLabel) ++count;
  for (std::int64_t b = 0; b < labels.size(0); ++b)
    for (std::int64_t t = 0; t < labels.size(1); ++t) {
      const auto y = labels[b][t].item<std::int64_t>();
      if (y == loss::kIgnoreLabel) continue;
      const auto p = softmax_row(logits[b][t], 1.0);
      total += -std::log(p[y]);
      for (std::int64_t v = 0; v < logits.size(2); ++v)
        grad[b][t][v] = (p[v] - (v == y ? 1.0 : 0.0)) / count;
    }
  return {count ? total / count : 0.0, grad};
}

TEST(Siglip2Loss, LoccaLabelsPredictOnlyTheTarget) {
  // Sample 0: a caption (target from position 1); sample 1: an ARef sequence whose prefix is the
  // start token and a 2-token phrase, the target from position 3; pad 0.
  const auto tokens = ints({{7, 11, 12, 9, 0, 0}, {7, 21, 22, 31, 32, 9}});
  const auto start = at::tensor(std::vector<std::int64_t>{1, 3}, kI64);
  const auto labels = loss::locca_labels(tokens, start, 0);
  const std::int64_t x = loss::kIgnoreLabel;
  EXPECT_TRUE(at::equal(labels, ints({{11, 12, 9, x, x}, {x, x, 31, 32, 9}})));
  const auto masked = loss::parallel_inputs(tokens, start, 5);
  EXPECT_TRUE(at::equal(masked, ints({{7, 5, 5, 5, 5, 5}, {7, 21, 22, 5, 5, 5}})));
  EXPECT_THROW(loss::locca_labels(tokens, at::zeros({3}, kI64), 0), c10::Error);
}

TEST(Siglip2Loss, DecoderTokenLossValueAndGradient) {
  at::manual_seed(3);
  auto logits = at::randn({2, 4, 6}, kF32).requires_grad_(true);
  const std::int64_t x = loss::kIgnoreLabel;
  const auto labels = ints({{1, 5, x, x}, {0, x, 3, 2}});
  const auto got = loss::decoder_token_loss(logits, labels);
  got.backward();
  const auto [want, want_grad] = token_ce_by_hand(logits.detach(), labels);
  EXPECT_NEAR(got.item<double>(), want, 1e-5);
  EXPECT_TRUE(at::allclose(logits.grad().to(at::kDouble), want_grad, 1e-5, 1e-6));

  // Nothing to predict: 0 and a zero gradient, not NaN.
  auto none = at::randn({1, 3, 6}, kF32).requires_grad_(true);
  const auto zero = loss::decoder_token_loss(none, at::full({1, 3}, x, kI64));
  zero.backward();
  EXPECT_EQ(zero.item<double>(), 0.0);
  EXPECT_EQ(none.grad().abs().sum().item<double>(), 0.0);
}

TEST(Siglip2Loss, LoccaComposesTheTasksAndSkipsAbsentRegions) {
  at::manual_seed(4);
  const std::int64_t x = loss::kIgnoreLabel;
  loss::LoccaInputs in;
  in.caption_logits = at::randn({3, 3, 5}, kF32).requires_grad_(true);
  in.caption_labels = ints({{1, 2, x}, {4, x, x}, {0, 0, 3}});
  in.aref_logits = at::randn({1, 4, 5}, kF32).requires_grad_(true);  // one sample has regions
  in.aref_labels = ints({{x, x, 2, 4}});
  in.gcap_logits = at::randn({1, 4, 5}, kF32).requires_grad_(true);
  in.gcap_labels = ints({{x, 1, 3, x}});
  const loss::LoccaTaskWeights w{0.5, 2.0, 3.0};
  const auto out = loss::locca_loss(in, w);
  out.total.backward();
  const auto [cap, cap_grad] = token_ce_by_hand(in.caption_logits.detach(), in.caption_labels);
  const auto [aref, aref_grad] = token_ce_by_hand(in.aref_logits.detach(), in.aref_labels);
  const auto [gcap, gcap_grad] = token_ce_by_hand(in.gcap_logits.detach(), in.gcap_labels);
  EXPECT_NEAR(out.caption.item<double>(), cap, 1e-5);
  EXPECT_NEAR(out.aref.item<double>(), aref, 1e-5);
  EXPECT_NEAR(out.gcap.item<double>(), gcap, 1e-5);
  EXPECT_NEAR(out.total.item<double>(), 0.5 * cap + 2.0 * aref + 3.0 * gcap, 1e-5);
  EXPECT_EQ(out.region_samples, 1);
  EXPECT_TRUE(at::allclose(in.caption_logits.grad().to(at::kDouble), 0.5 * cap_grad, 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(in.aref_logits.grad().to(at::kDouble), 2.0 * aref_grad, 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(in.gcap_logits.grad().to(at::kDouble), 3.0 * gcap_grad, 1e-5, 1e-6));

  // No sample with regions: the region terms are 0 and the total is the caption term.
  loss::LoccaInputs caption_only;
  caption_only.caption_logits = in.caption_logits.detach();
  caption_only.caption_labels = in.caption_labels;
  caption_only.aref_logits = at::empty({0, 4, 5}, kF32);
  caption_only.aref_labels = at::empty({0, 4}, kI64);
  const auto alone = loss::locca_loss(caption_only);
  EXPECT_EQ(alone.region_samples, 0);
  EXPECT_EQ(alone.aref.item<double>(), 0.0);
  EXPECT_EQ(alone.gcap.item<double>(), 0.0);
  EXPECT_NEAR(alone.total.item<double>(), cap, 1e-5);
}

TEST(Siglip2Loss, ParallelPredictionStepsAreAStableShare) {
  int on = 0;
  for (std::int64_t s = 0; s < 4000; ++s) {
    const bool p = loss::parallel_prediction_step(17, s, 0.5);
    EXPECT_EQ(p, loss::parallel_prediction_step(17, s, 0.5));  // the same on every call/rank
    on += p;
    EXPECT_FALSE(loss::parallel_prediction_step(17, s, 0.0));
    EXPECT_TRUE(loss::parallel_prediction_step(17, s, 1.0));
  }
  EXPECT_GT(on, 1850);
  EXPECT_LT(on, 2150);
}

// distill_ce written out: -sum_k pt_k log ps_k, pt = softmax((t - c) / tt), ps = softmax(s / ts);
// d/ds_k = (ps_k - pt_k) / ts.
struct RowCe {
  double value;
  std::vector<double> grad;
};
RowCe row_ce(const at::Tensor& s, const at::Tensor& t, const at::Tensor& c,
             const loss::DistillTemps& temps) {
  const auto pt = softmax_row(t, temps.teacher, c), ps = softmax_row(s, temps.student);
  RowCe r{0.0, std::vector<double>(pt.size())};
  for (std::size_t k = 0; k < pt.size(); ++k) {
    r.value -= pt[k] * std::log(ps[k]);
    r.grad[k] = (ps[k] - pt[k]) / temps.student;
  }
  return r;
}

TEST(Siglip2Loss, SilcMatchesLocalViewsToTheTeachersGlobalView) {
  at::manual_seed(5);
  const std::int64_t v = 3, b = 2, k = 5;
  auto student = at::randn({v, b, k}, kF32).requires_grad_(true);
  auto teacher = at::randn({b, k}, kF32).requires_grad_(true);
  const auto center = at::randn({k}, kF32) * 0.1;
  const loss::DistillTemps temps;  // 0.1 / 0.04
  const auto got = loss::silc_loss(student, teacher, center, temps);
  got.backward();
  double want = 0;
  auto want_grad = at::zeros({v, b, k}, at::TensorOptions().dtype(at::kDouble));
  for (std::int64_t i = 0; i < v; ++i)
    for (std::int64_t j = 0; j < b; ++j) {
      const auto r = row_ce(student[i][j].detach(), teacher[j].detach(), center, temps);
      want += r.value / (v * b);
      for (std::int64_t q = 0; q < k; ++q) want_grad[i][j][q] = r.grad[q] / (v * b);
    }
  EXPECT_NEAR(got.item<double>(), want, 1e-4 * std::abs(want));
  EXPECT_TRUE(at::allclose(student.grad().to(at::kDouble), want_grad, 1e-4, 1e-6));
  // The teacher is a target: no gradient reaches it.
  EXPECT_FALSE(teacher.grad().defined() && teacher.grad().abs().sum().item<double>() != 0.0);
}

TEST(Siglip2Loss, MaskedPredictionAveragesMaskedPatchesPerSample) {
  at::manual_seed(6);
  const std::int64_t b = 3, n = 4, k = 6;
  auto student = at::randn({b, n, k}, kF32).requires_grad_(true);
  const auto teacher = at::randn({b, n, k}, kF32);
  const auto center = at::randn({k}, kF32) * 0.1;
  // Sample 0: 2 masked patches, sample 1: none (left out of the mean), sample 2: 1.
  auto mask = at::zeros({b, n}, at::TensorOptions().dtype(at::kBool));
  mask[0][1] = true;
  mask[0][3] = true;
  mask[2][0] = true;
  const loss::DistillTemps temps{0.2, 0.05, 0.9};
  const auto got = loss::masked_prediction_loss(student, teacher, mask, center, temps);
  got.backward();
  double want = 0;
  auto want_grad = at::zeros({b, n, k}, at::TensorOptions().dtype(at::kDouble));
  const int samples = 2;
  for (std::int64_t i = 0; i < b; ++i) {
    const int masked = mask[i].sum().item<int>();
    for (std::int64_t j = 0; j < n; ++j) {
      if (!mask[i][j].item<bool>()) continue;
      const auto r = row_ce(student[i][j].detach(), teacher[i][j], center, temps);
      want += r.value / masked / samples;
      for (std::int64_t q = 0; q < k; ++q) want_grad[i][j][q] = r.grad[q] / masked / samples;
    }
  }
  EXPECT_NEAR(got.item<double>(), want, 1e-4 * std::abs(want));
  EXPECT_TRUE(at::allclose(student.grad().to(at::kDouble), want_grad, 1e-4, 1e-6));
  // Nothing masked: 0.
  const auto none = at::zeros({b, n}, at::TensorOptions().dtype(at::kBool));
  EXPECT_EQ(loss::masked_prediction_loss(student, teacher, none, center, temps).item<double>(),
            0.0);
}

TEST(Siglip2Loss, CenterIsAMovingMeanOfTheTeacher) {
  const auto center = at::tensor(std::vector<float>{1.0f, -1.0f}, kF32);
  const auto teacher = at::tensor(std::vector<float>{0.0f, 2.0f, 4.0f, 6.0f}, kF32).view({2, 2});
  const auto c = loss::updated_center(center, teacher, 0.9);
  EXPECT_NEAR(c[0].item<double>(), 0.9 * 1.0 + 0.1 * 2.0, 1e-6);
  EXPECT_NEAR(c[1].item<double>(), 0.9 * -1.0 + 0.1 * 4.0, 1e-6);
}

TEST(Siglip2Loss, RandomPatchMaskHidesExactlyTheShare) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  const auto mask = loss::random_patch_mask(4, 16, 0.5, gen);
  ASSERT_EQ(mask.sizes(), (std::vector<std::int64_t>{4, 16}));
  for (std::int64_t i = 0; i < 4; ++i) EXPECT_EQ(mask[i].sum().item<std::int64_t>(), 8);
  EXPECT_FALSE(at::equal(mask[0], mask[1]));  // the rows are drawn apart
  auto again = at::make_generator<at::CPUGeneratorImpl>(11);
  EXPECT_TRUE(at::equal(mask, loss::random_patch_mask(4, 16, 0.5, again)));
  EXPECT_EQ(loss::random_patch_mask(2, 5, 0.0, gen).sum().item<std::int64_t>(), 0);
  EXPECT_THROW(loss::random_patch_mask(2, 5, 1.5, gen), clipper::core::InputError);
}

}  // namespace
