#pragma once
// The metrics CLIP_benchmark reports, as pure functions of scores and ground truth (CPU tensors).
// Ties are broken one way everywhere: among equal scores the candidate with the lower index comes
// first (a stable descending sort), so a result never depends on a sort's internals.
// docs/evaluation.md, "The metrics", compares each with CLIP_benchmark 1.6.2.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace clipper::eval {

// For each row of `scores` [R, C] with `positives` [R, C] (bool), the 0-based position of the
// first positive in the row's stable descending order; INT64_MAX when the row has none (never
// found, whatever k).
at::Tensor first_positive_rank(const at::Tensor& scores, const at::Tensor& positives);

struct ClassificationMetrics {
  double acc1 = 0;
  std::optional<double> acc5;  // none when there are fewer than 5 classes
  double mean_per_class_recall = 0;
};

// Single-label zero-shot classification from `logits` [N, C] and `target` [N] (int64, 0..C-1):
// acc1 and acc5 (the true class among the first 1 / 5), and the mean over the classes present in
// `target` of each class's recall with the top-1 prediction (sklearn's balanced_accuracy_score,
// as CLIP_benchmark takes it: a class absent from the split does not count).
ClassificationMetrics classification_metrics(const at::Tensor& logits, const at::Tensor& target);

// Multilabel: the mean over all C classes of each class's average precision, from `scores`
// [N, C] and `targets` [N, C] (0/1): the samples in descending score order, the precision at each
// positive summed and divided by the class's positives (a class with none scores 0, as
// CLIP_benchmark counts it).
double mean_average_precision(const at::Tensor& scores, const at::Tensor& targets);

struct RetrievalMetrics {
  std::vector<std::int64_t> ks;
  std::vector<double> image_retrieval;  // per k: texts whose image is among the first k images
  std::vector<double> text_retrieval;   // per k: images with any of their texts in the first k
};

// Retrieval between `images` [I, D] and `texts` [T, D] (normalized features); text t describes
// image `text_image` [T] (int64). Recall@k counts a query as found when any positive is among
// its first k candidates (the way CLIP papers and CLIP_benchmark report it); an image without a
// text counts as not found. k larger than the candidates counts every query with a positive.
RetrievalMetrics retrieval_metrics(const at::Tensor& images, const at::Tensor& texts,
                                   const at::Tensor& text_image,
                                   const std::vector<std::int64_t>& ks);

// DataComp's iWildCam score, WILDS 2.0's F1(average="macro"): sklearn's f1_score with
// average="macro" and labels = the classes present in `target` [N], from the top-1 predictions
// `predicted` [N]. Per such class 2 tp / (2 tp + fp + fn) (0 when never predicted correctly), the
// mean over them; a class absent from the split does not count even when predicted (its
// predictions are only the missed samples of their true classes).
double macro_f1(const at::Tensor& predicted, const at::Tensor& target);

// 1 where the true class is among the first k of its row of `logits` [N, C] (stable descending
// order; k capped at C), else 0: double [N].
at::Tensor top_k_hits(const at::Tensor& logits, const at::Tensor& target, std::int64_t k);

// WILDS's group-wise average (its CombinatorialGrouper on one field, as DataComp runs it): groups
// are 0..max(groups), each with the mean of its `values` [N] (0 for a group without a sample) and
// its count; `worst` is the lowest mean over the groups that have samples.
struct GroupMeans {
  std::vector<double> mean;
  std::vector<std::int64_t> count;
  double worst = 0;
};
GroupMeans group_means(const at::Tensor& values, const at::Tensor& groups);

}  // namespace clipper::eval
