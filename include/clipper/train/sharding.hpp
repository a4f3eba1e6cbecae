#pragma once
// How the trainable parameters, their gradients and the optimizer state are spread over the ranks
// (dist.zero). One interface, one implementation per stage, one file each:
//
//   0 replicated  (sharding_replicated.cpp) every rank holds everything: gradients all-reduced,
//                 AdamW over the whole parameters
//   1 zero1       (sharding_zero1.cpp) AdamW moments sharded over the flat buckets: gradients
//                 reduce-scattered, AdamW over this rank's shard, shards all-gathered
//   2 zero2       (sharding_zero2.cpp) as 1, and each full gradient is freed once in its bucket
//   3 full        (sharding_full.cpp) as 2, and every rank keeps only its shard of the
//                 parameters, during the step and between steps; a unit is gathered while
//                 operations use it (dist/param_units.hpp)
//
// The step reads the same for every stage (step.cpp):
//   begin_step()                                  before the step's first forward
//   forward ... begin_backward(); loss.backward() before the backward that completes the step
//   finish_backward()                             the gradients are reduced: gradients()
//   norm_term(norms) -> all-reduce SUM -> global_norm(sum)
//   clip gradients(); step(lr, found_inf)         AdamW over what this rank holds
//   between_steps(fn)                             the clamp, the weight average: fn reads and
//                                                 may change parameters
// Stages 0-2 hold whole parameters all the time. Full sharding holds whole parameters only where
// something asks for them: gather_whole() ... release_whole() (collective) around evaluation,
// checkpoints and export.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "clipper/dist/flat_layout.hpp"
#include "clipper/optim/adamw.hpp"
#include "clipper/optim/param_groups.hpp"
#include "clipper/optim/sharded_adamw.hpp"

namespace clipper::dist {
class ProcessGroup;
}

namespace clipper::train {

// What every stage is built from.
struct ShardingSetup {
  std::vector<at::Tensor> params;             // the trainable parameters, in model order
  std::vector<std::string> names;             // their names (the flat-shard checkpoint's keys)
  std::vector<optim::ParamSetting> settings;  // their weight decay and lr scale
  std::vector<optim::ParamGroup> groups;      // the same as groups (the whole AdamW's)
  optim::AdamWOptions adamw;
  std::shared_ptr<dist::ProcessGroup> pg;
  double bucket_mb = 25.0;   // dist.bucket_mb
  bool overlap = true;       // dist.overlap_grad_reduce
  bool prefetch = false;     // dist.prefetch, resolved for the device (full sharding)
  bool gather_bf16 = false;  // dist.gather_bf16 (full sharding)
};

// What the parameters cost this rank (bytes) and what their gathers did.
struct ShardingCounters {
  std::int64_t peak_parameter_bytes = 0;      // the most held at once during the last step
  std::int64_t resident_parameter_bytes = 0;  // held now
  std::int64_t peak_gradient_bytes = 0;       // the most held at once during the last backward
  std::int64_t gathers = 0, prefetched = 0;   // unit all-gathers so far (full sharding)
  double gather_wait_s = 0;                   // seconds waited for them so far
};

class ParameterSharding {
 public:
  virtual ~ParameterSharding() = default;

  // Before the step's first forward pass.
  virtual void begin_step() {}
  // Before the backward pass that completes the step's gradients.
  virtual void begin_backward() = 0;
  // After it: the gradients are reduced (the whole mean, or this rank's shard of it).
  virtual void finish_backward() = 0;
  // The reduced gradients this rank steps on: whole ones, or this rank's shards.
  virtual std::vector<at::Tensor> gradients() const = 0;
  // This rank's term of the global gradient norm from the norms of gradients() (a 1-D tensor):
  // the terms are summed over the ranks, and global_norm(sum) is the norm of the whole gradient.
  // Sharded: squared norms in float64, and the root of the sum.
  virtual at::Tensor norm_term(const at::Tensor& norms) const;
  virtual at::Tensor global_norm(const at::Tensor& summed) const;
  // AdamW at `lr` (found_inf, a float32 scalar: 1 changes nothing) over what this rank holds.
  virtual void step(double lr, const at::Tensor& found_inf) = 0;
  // Runs `fn`, which reads and may change parameters in place, after step(): full sharding
  // gathers the units it reads on demand and keeps this rank's shard of what it changed.
  virtual void between_steps(const std::function<void()>& fn) { fn(); }
  // Collective: every parameter whole on every rank until release_whole() (full sharding; the
  // other stages hold them whole anyway). Changes made in between are kept.
  virtual void gather_whole() {}
  virtual void release_whole() {}

  // The optimizer state in its checkpoint form: this rank's shard of layout(), whatever the stage;
  // loading re-shards from shards saved by any stage and world size.
  virtual optim::FlatShards optimizer_shards() const = 0;
  virtual void load_optimizer_shards(const optim::SavedFlatShards& saved) = 0;
  // Bytes of optimizer state (moments and step counts) this rank holds.
  virtual std::int64_t optimizer_state_bytes() const = 0;
  // The most bytes of trainable parameters this rank held at once during the last step (whole
  // parameters, or shards plus the units gathered at the same time).
  virtual std::int64_t peak_parameter_bytes() const = 0;
  // The most bytes of gradients (full ones, flat buckets, shards) at once in the last backward.
  virtual std::int64_t peak_gradient_bytes() const = 0;
  virtual ShardingCounters counters() const;
  // The flat layout of the checkpoint shards.
  virtual const dist::FlatLayout& layout() const = 0;
  // Full sharding: this rank's shards of the parameters in their checkpoint form (flat shards of
  // layout(), key "param"); the other stages hold whole parameters and return nothing.
  virtual std::optional<optim::FlatShards> parameter_shards() { return std::nullopt; }
  // Full sharding: this rank's shard of every unit of layout(), current (taken from the units
  // whole now); always the same tensors, which step() updates in place. Else empty.
  virtual std::vector<at::Tensor> current_parameter_shards() { return {}; }
  // The whole-parameter AdamW (replicated only; else null).
  virtual optim::AdamW* whole_optimizer() { return nullptr; }
};

// The stage's implementation (dist.zero 0..3).
std::unique_ptr<ParameterSharding> make_sharding(int zero, ShardingSetup setup);

// The implementations (one file each).
std::unique_ptr<ParameterSharding> make_replicated(ShardingSetup setup);
std::unique_ptr<ParameterSharding> make_zero1(ShardingSetup setup);
std::unique_ptr<ParameterSharding> make_zero2(ShardingSetup setup);
std::unique_ptr<ParameterSharding> make_full(ShardingSetup setup);

// Bytes of the tensors' elements.
std::int64_t bytes_of(const std::vector<at::Tensor>& tensors);

}  // namespace clipper::train
