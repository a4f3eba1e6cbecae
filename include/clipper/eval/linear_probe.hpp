#pragma once
// The CLIP paper's second protocol as CLIP_benchmark runs it (metrics/linear_probe.py): a linear
// head on frozen, normalized image features, trained with AdamW (cross-entropy, a cosine learning
// rate without warm-up, shuffled batches) for a few epochs; with a validation split the weight
// decay is chosen on it from 97 values log-spaced over [1e-6, 1e2] (a coarse pass over 7 of them,
// then 4 refinements around the best), and the final head trains on train + validation.
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "clipper/eval/metrics.hpp"

namespace clipper::eval {

struct LinearProbeOptions {
  std::int64_t epochs = 10;
  double lr = 0.1;
  std::int64_t batch_size = 64;
  std::int64_t fewshot_k = -1;  // > 0: k training samples per class (drawn with `seed`)
  std::uint64_t seed = 0;
};

struct LinearProbeResult {
  double weight_decay = 0;
  ClassificationMetrics metrics;  // lp_acc1, lp_acc5, lp_mean_per_class_recall
};

// `train_x` [N, D] with `train_y` [N] (int64); `val_x`/`val_y` may be undefined (no sweep: weight
// decay 0). Classes: the largest training label + 1, as CLIP_benchmark. CPU tensors.
LinearProbeResult linear_probe(const at::Tensor& train_x, const at::Tensor& train_y,
                               const at::Tensor& val_x, const at::Tensor& val_y,
                               const at::Tensor& test_x, const at::Tensor& test_y,
                               const LinearProbeOptions& options);

// The head itself: one training run with weight decay `wd`; returns the logits of `eval_x`.
at::Tensor train_linear_head(const at::Tensor& x, const at::Tensor& y, std::int64_t classes,
                             double wd, const LinearProbeOptions& options,
                             const at::Tensor& eval_x);

}  // namespace clipper::eval
