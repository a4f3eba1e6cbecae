#include "clipper/train/device_stats.hpp"

#include <ATen/ATen.h>

#include <cmath>

namespace clipper::train {
namespace {

// Slots of the device tensor.
enum Field : std::int64_t {
  kLossSum,   // good steps' losses
  kSteps,     // steps in the window
  kSkipped,   // bad steps in the window
  kInRow,     // bad steps in a row now
  kMaxInRow,  // longest run of bad steps seen in the window
  kNorm,      // last gradient norm
  kScale,     // exp(logit_scale) after the last step
  kLastBad,   // the last step was bad
  kLastLoss,  // loss of the last good step
  kCount
};

}  // namespace

DeviceStats::DeviceStats(at::Device device)
    : values_(at::zeros({kCount}, at::TensorOptions().dtype(at::kDouble).device(device))) {
  values_[kLastLoss].fill_(std::nan(""));  // no good step yet
}

void DeviceStats::update(const at::Tensor& loss, const at::Tensor& bad, const at::Tensor& grad_norm,
                         const at::Tensor& logit_scale) {
  const at::Tensor is_bad = bad.to(at::kDouble);
  const at::Tensor loss64 = loss.to(at::kDouble);
  const at::Tensor in_row = (values_[kInRow] + 1.0) * is_bad;
  values_ = at::stack({values_[kLossSum] + at::where(bad, 0.0, loss64), values_[kSteps] + 1.0,
                       values_[kSkipped] + is_bad, in_row, at::maximum(values_[kMaxInRow], in_row),
                       grad_norm.to(at::kDouble), logit_scale.to(at::kDouble), is_bad,
                       at::where(bad, values_[kLastLoss], loss64)});
}

StatsWindow DeviceStats::read_back() {
  const auto host = values_.cpu();  // the one host read
  const double* v = host.data_ptr<double>();
  StatsWindow w;
  w.read = true;
  w.window_steps = static_cast<std::int64_t>(v[kSteps]);
  w.window_skipped = static_cast<std::int64_t>(v[kSkipped]);
  w.window_loss_sum = v[kLossSum];
  const auto good = w.window_steps - w.window_skipped;
  w.loss = good > 0 ? v[kLossSum] / static_cast<double>(good) : std::nan("");
  w.nan_in_row = static_cast<std::int64_t>(v[kInRow]);
  w.max_nan_in_row = static_cast<std::int64_t>(v[kMaxInRow]);
  w.grad_norm = v[kNorm];
  w.logit_scale = v[kScale];
  w.skipped = v[kLastBad] > 0;
  w.last_loss = v[kLastLoss];
  values_ = at::zeros_like(values_);
  values_[kInRow].fill_(v[kInRow]);
  values_[kMaxInRow].fill_(v[kInRow]);
  values_[kLastLoss].fill_(v[kLastLoss]);
  return w;
}

std::int64_t DeviceStats::nan_in_row() const {
  return static_cast<std::int64_t>(values_[kInRow].item<double>());
}

void DeviceStats::set_nan_in_row(std::int64_t n) {
  values_[kInRow].fill_(static_cast<double>(n));
  values_[kMaxInRow].fill_(static_cast<double>(n));
}

}  // namespace clipper::train
