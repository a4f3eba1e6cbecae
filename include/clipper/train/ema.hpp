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
//
// Full sharding (dist.zero 3) keeps the average of the trainable parameters sharded as they are:
// over this rank's flat shards of the units (ShardedParameters), the same elements the optimizer
// updates, so each rank holds 1/W of it; the buffers' average stays whole. Swapping it in
// exchanges the shards (gather the whole parameters afterwards, never before); its checkpoint
// form is the flat-shard form of the parameter shards (key "ema"), re-split for any world size.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "clipper/dist/flat_layout.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/optim/sharded_adamw.hpp"

namespace clipper::train {

struct EmaOptions {
  double decay = 0.0;         // 0: off
  double warmup_power = 0.0;  // 0: no warmup
};

// decay_t of update t (0-based).
double ema_decay_at(const EmaOptions& options, std::int64_t t);

// Full sharding's parameters as the average sees them.
struct ShardedParameters {
  dist::FlatLayout layout;  // the units
  int rank = 0;
  std::vector<std::string> names;  // parameter i of the layout
  // This rank's shard of every unit, current (taken from units that are whole now); always the
  // same tensors, which the optimizer updates in place.
  std::function<std::vector<at::Tensor>()> current;
};

class WeightEma {
 public:
  // Starts the average at the model's current weights (on the model's device). With `sharded`,
  // the trainable parameters are averaged over this rank's shards of them.
  WeightEma(model::ClipImpl& model, EmaOptions options,
            std::optional<ShardedParameters> sharded = std::nullopt);

  // One update toward the model's weights; no host synchronization.
  void update();
  std::int64_t updates() const { return updates_; }
  void set_updates(std::int64_t n) { updates_ = n; }
  const EmaOptions& options() const { return options_; }

  // The averaged tensors kept whole, by OpenCLIP name (the model's state-dict names), on the
  // device: every tracked tensor, or with full sharding the buffers only.
  std::vector<std::pair<std::string, at::Tensor>> named() const;
  // Full sharding: the names of the parameters averaged as shards (else none), and this rank's
  // shards of their average in the flat-shard form (key "ema").
  std::vector<std::string> sharded_names() const;
  std::optional<optim::FlatShards> shards() const;
  // Bytes of the averaged trainable parameters this rank holds (1/W of them with full sharding).
  std::int64_t parameter_bytes() const;

  // Copies saved averages in: `saved` whole tensors and `elsewhere`, the names of those saved as
  // flat shards instead (load_shards), together exactly the tracked ones (InputError naming
  // `origin` and what differs). Whole saved averages of sharded parameters are cut into shards.
  void load(const std::vector<std::pair<std::string, at::Tensor>>& saved,
            const std::vector<std::string>& elsewhere, const std::string& origin);
  // The averages of `names` from flat shards (key "ema") saved by any stage and world size.
  void load_shards(const optim::SavedFlatShards& saved, const std::vector<std::string>& names);
  // Restarts the average at the model's weights, update count 0.
  void reset_to_model();
  // Exchanges the averages with the model's weights (calling it again swaps back, exactly). With
  // full sharding it exchanges the parameter shards: the units must not be whole.
  void swap_with_model();

 private:
  // The live tensors and their averages, whole ones first, then the shards.
  std::vector<at::Tensor> live() const;
  std::vector<at::Tensor> averages() const;

  EmaOptions options_;
  std::int64_t updates_ = 0;
  std::vector<std::string> names_;
  std::vector<at::Tensor> live_;  // the model's tensors
  std::vector<at::Tensor> ema_;
  std::optional<ShardedParameters> sharded_;
  std::vector<std::vector<std::int64_t>> sharded_shapes_;  // per sharded name
  std::vector<at::Tensor> ema_shards_;                     // per unit
};

// Evaluates (or exports) the averaged weights for its lifetime: swaps them into the model and
// back. A null `ema` does nothing. With full sharding, train::AveragedWeights (step.hpp) instead:
// it swaps before the units are gathered.
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
