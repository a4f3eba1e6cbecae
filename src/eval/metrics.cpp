#include "clipper/eval/metrics.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <string>

#include "clipper/core/error.hpp"

namespace clipper::eval {
namespace {

constexpr std::int64_t kNoPositive = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kRowBlock = 1024;  // rows ranked at a time (bounds the [rows, C] copies)

void check_rows(const at::Tensor& a, const at::Tensor& b, const char* what) {
  if (a.dim() != 2 || b.size(0) != a.size(0))
    throw core::InputError(std::string(what) + ": the scores and the ground truth disagree on " +
                           "the number of samples (" + std::to_string(a.size(0)) + " vs " +
                           std::to_string(b.size(0)) + ")");
}

// first_positive_rank of [R, C] scores against the positives of `rows` of a [R, C] mask made
// block by block, so a large retrieval set never holds two [R, C] copies at once.
template <class Positives>
at::Tensor ranks_by_block(const at::Tensor& scores, const Positives& positives_of) {
  std::vector<at::Tensor> out;
  for (std::int64_t start = 0; start < scores.size(0); start += kRowBlock) {
    const std::int64_t n = std::min(kRowBlock, scores.size(0) - start);
    out.push_back(first_positive_rank(scores.narrow(0, start, n), positives_of(start, n)));
  }
  return out.empty() ? at::zeros({0}, at::kLong) : at::cat(out);
}

double fraction_below(const at::Tensor& ranks, std::int64_t k) {
  if (ranks.numel() == 0) return 0;
  return ranks.lt(k).to(at::kDouble).mean().item<double>();
}

}  // namespace

at::Tensor first_positive_rank(const at::Tensor& scores, const at::Tensor& positives) {
  const auto order = std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/1, /*descending=*/true));
  const auto sorted = positives.to(at::kBool).gather(1, order);
  // argmax returns the first maximal index: the first positive, or 0 for a row without one.
  const auto first = sorted.to(at::kInt).argmax(1);
  return at::where(sorted.any(1), first, at::full_like(first, kNoPositive));
}

ClassificationMetrics classification_metrics(const at::Tensor& logits, const at::Tensor& target) {
  check_rows(logits, target, "zero-shot classification");
  const std::int64_t C = logits.size(1);
  const auto t = target.to(at::kLong);
  if (t.numel() > 0 && (t.min().item<std::int64_t>() < 0 || t.max().item<std::int64_t>() >= C))
    throw core::InputError("zero-shot classification: a label is outside 0.." +
                           std::to_string(C - 1) + " (the dataset has " + std::to_string(C) +
                           " class names)");
  ClassificationMetrics m;
  const auto ranks = ranks_by_block(logits, [&](std::int64_t s, std::int64_t n) {
    return at::one_hot(t.narrow(0, s, n), C).to(at::kBool);
  });
  m.acc1 = fraction_below(ranks, 1);
  if (C >= 5) m.acc5 = fraction_below(ranks, 5);
  // The top-1 prediction is the class ranked first; a sample is correct exactly when its rank is 0.
  const auto correct = ranks.eq(0).to(at::kDouble);
  const auto support = at::bincount(t, {}, C).to(at::kDouble);
  const auto hits = at::bincount(t, correct, C);
  const auto present = support.gt(0);
  if (present.any().item<bool>())
    m.mean_per_class_recall =
        (hits.masked_select(present) / support.masked_select(present)).mean().item<double>();
  return m;
}

double mean_average_precision(const at::Tensor& scores, const at::Tensor& targets) {
  check_rows(scores, targets, "multilabel classification");
  if (targets.dim() != 2 || targets.size(1) != scores.size(1))
    throw core::InputError("multilabel classification: " + std::to_string(scores.size(1)) +
                           " class names but label vectors of " +
                           std::to_string(targets.dim() == 2 ? targets.size(1) : -1) + " entries");
  const std::int64_t N = scores.size(0), C = scores.size(1);
  if (C == 0) return 0;
  if (N == 0) return 0;
  // Columns are classes: sort the samples of every class at once, stably (ties in sample order).
  const auto order = std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true));
  const auto truth = targets.to(at::kDouble).gt(0).to(at::kDouble).gather(0, order);
  const auto rank = at::arange(1, N + 1, at::kDouble).unsqueeze(1);
  const auto precision = truth.cumsum(0) / rank;
  const auto positives = truth.sum(0);
  const auto ap = (precision * truth).sum(0) / at::clamp_min(positives, 1.0);
  return ap.mean().item<double>();
}

RetrievalMetrics retrieval_metrics(const at::Tensor& images, const at::Tensor& texts,
                                   const at::Tensor& text_image,
                                   const std::vector<std::int64_t>& ks) {
  const std::int64_t I = images.size(0), T = texts.size(0);
  if (text_image.numel() != T)
    throw core::InputError("retrieval: " + std::to_string(T) + " texts but " +
                           std::to_string(text_image.numel()) + " image indices");
  const auto owner = text_image.to(at::kLong);
  const auto scores = texts.to(at::kFloat).matmul(images.to(at::kFloat).t());  // [T, I]
  // Text t -> images: its one image is the positive.
  const auto by_text = ranks_by_block(scores, [&](std::int64_t s, std::int64_t n) {
    return at::one_hot(owner.narrow(0, s, n), I).to(at::kBool);
  });
  // Image i -> texts: every text of image i is a positive.
  const auto scores_t = scores.t().contiguous();  // [I, T]
  const auto by_image = ranks_by_block(scores_t, [&](std::int64_t s, std::int64_t n) {
    return owner.unsqueeze(0).eq(at::arange(s, s + n, at::kLong).unsqueeze(1));
  });
  RetrievalMetrics m;
  m.ks = ks;
  for (const auto k : ks) {
    m.image_retrieval.push_back(fraction_below(by_text, k));
    m.text_retrieval.push_back(fraction_below(by_image, k));
  }
  return m;
}

double macro_f1(const at::Tensor& predicted, const at::Tensor& target) {
  if (predicted.numel() != target.numel())
    throw core::InputError("macro F1: " + std::to_string(predicted.numel()) + " predictions for " +
                           std::to_string(target.numel()) + " labels");
  if (target.numel() == 0) return 0;
  const auto t = target.to(at::kLong).flatten(), p = predicted.to(at::kLong).flatten();
  const std::int64_t C = std::max(t.max().item<std::int64_t>(), p.max().item<std::int64_t>()) + 1;
  const auto support = at::bincount(t, {}, C).to(at::kDouble);  // tp + fn
  const auto guessed = at::bincount(p, {}, C).to(at::kDouble);  // tp + fp
  const auto tp = at::bincount(t.masked_select(t.eq(p)), {}, C).to(at::kDouble);
  const auto present = support.gt(0);
  const auto f1 = (2 * tp) / at::clamp_min(support + guessed, 1.0);  // 2tp / (2tp + fp + fn)
  return f1.masked_select(present).mean().item<double>();
}

at::Tensor top_k_hits(const at::Tensor& logits, const at::Tensor& target, std::int64_t k) {
  check_rows(logits, target, "top-k accuracy");
  const std::int64_t C = logits.size(1);
  const auto t = target.to(at::kLong);
  const auto ranks = ranks_by_block(logits, [&](std::int64_t s, std::int64_t n) {
    return at::one_hot(t.narrow(0, s, n), C).to(at::kBool);
  });
  return ranks.lt(std::min(k, C)).to(at::kDouble);
}

GroupMeans group_means(const at::Tensor& values, const at::Tensor& groups) {
  if (values.numel() != groups.numel())
    throw core::InputError("group metrics: " + std::to_string(values.numel()) + " values for " +
                           std::to_string(groups.numel()) + " group indices");
  GroupMeans m;
  if (groups.numel() == 0) return m;
  const auto g = groups.to(at::kLong).flatten();
  if (g.min().item<std::int64_t>() < 0)
    throw core::InputError("group metrics: a group index is negative");
  const std::int64_t G = g.max().item<std::int64_t>() + 1;
  const auto count = at::bincount(g, {}, G);
  const auto sum = at::bincount(g, values.to(at::kDouble).flatten(), G);
  bool any = false;
  for (std::int64_t i = 0; i < G; ++i) {
    const auto n = count[i].item<std::int64_t>();
    m.count.push_back(n);
    m.mean.push_back(n > 0 ? sum[i].item<double>() / static_cast<double>(n) : 0.0);
    if (n > 0 && (!any || m.mean.back() < m.worst)) m.worst = m.mean.back();
    any = any || n > 0;
  }
  return m;
}

}  // namespace clipper::eval
