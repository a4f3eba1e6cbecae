#pragma once
// An exponential moving average of the weights (train.ema_decay), as timm's ModelEmaV3: after
// every optimizer step, ema = lerp(ema, weights, 1 - decay_t) in one fused multi-tensor kernel
// (at::_foreach_lerp_) with decay_t computed on the host from the update count, so the update
// never reads the device. It tracks what training changes: the trainable parameters and the
// floating-point buffers (BatchNorm statistics); frozen tensors are the model's own.
//
// Warmup (train.ema_warmup_power p > 0): decay_t = min(decay, 1 - (1 + t)^-p) for the t-th update
// (0-based), timm's ModelEmaV3 warmup with gamma 1: the first update copies the weights, and the
// average forgets its random start quickly. p = 0: decay_t = decay from the first update, with
// the average starting from the weights the run starts with.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "clipper/model/clip.hpp"

namespace clipper::train {

struct EmaOptions {
  double decay = 0.0;         // 0: off
  double warmup_power = 0.0;  // 0: no warmup
};

// decay_t of update t (0-based).
double ema_decay_at(const EmaOptions& options, std::int64_t t);

class WeightEma {
 public:
  // Starts the average at the model's current weights (on the model's device).
  WeightEma(model::ClipImpl& model, EmaOptions options);

  // One update toward the model's weights; no host synchronization.
  void update();
  std::int64_t updates() const { return updates_; }
  void set_updates(std::int64_t n) { updates_ = n; }
  const EmaOptions& options() const { return options_; }

  // The averaged tensors by OpenCLIP name (the model's state-dict names), on the device.
  std::vector<std::pair<std::string, at::Tensor>> named() const;
  // Copies saved averages in; the names and shapes must be exactly the tracked ones (InputError
  // naming `origin` and what differs).
  void load(const std::vector<std::pair<std::string, at::Tensor>>& saved,
            const std::string& origin);
  // Restarts the average at the model's weights, update count 0.
  void reset_to_model();
  // Exchanges the averages with the model's weights (calling it again swaps back, exactly).
  void swap_with_model();

 private:
  EmaOptions options_;
  std::int64_t updates_ = 0;
  std::vector<std::string> names_;
  std::vector<at::Tensor> live_;  // the model's tensors
  std::vector<at::Tensor> ema_;
};

// Evaluates (or exports) the averaged weights for its lifetime: swaps them into the model and
// back. A null `ema` does nothing.
class EmaSwapped {
 public:
  explicit EmaSwapped(WeightEma* ema) : ema_(ema) {
    if (ema_) ema_->swap_with_model();
  }
  ~EmaSwapped() {
    if (ema_) ema_->swap_with_model();
  }
  EmaSwapped(const EmaSwapped&) = delete;
  EmaSwapped& operator=(const EmaSwapped&) = delete;

 private:
  WeightEma* ema_;
};

}  // namespace clipper::train
