#pragma once
// ZeRO's optimizer: AdamW over this rank's flat shard of every gradient bucket
// (dist/flat_layout.hpp). It holds the moments of its shard only (fp32, or fp64 for fp64
// parameters) and one step count; weight decay and the lr scale apply per segment, since a shard
// crosses parameter (and so parameter-group) boundaries. The update per element is the one AdamW
// makes (the same fused kernel), so ZeRO and the unsharded optimizer agree to rounding.
//
// The checkpoint form of the optimizer is the same for every stage (FlatShards below): each rank
// saves the moments of its own shard of the layout with the world size that trains, and names in
// JSON which piece of which parameter each shard element is; any later world size and stage reads
// back the pieces it needs from whichever ranks' files hold them.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "clipper/dist/flat_layout.hpp"
#include "clipper/optim/adamw.hpp"

namespace clipper::optim {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// A parameter's group settings, carried to every segment of it.
struct ParamSetting {
  double weight_decay = 0.0;
  double lr_scale = 1.0;
};

class ShardedAdamW {
 public:
  // names[i], settings[i]: name and group settings of parameter i of the layout's list.
  ShardedAdamW(dist::FlatLayout layout, int rank, std::vector<std::string> names,
               std::vector<ParamSetting> settings, AdamWOptions options);
  // Updates `params` (this rank's shard of each bucket) in place from `grads` (the same shards of
  // the mean gradient). found_inf as AdamW::step: 1 changes nothing, decided on the device.
  void step(double lr, std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
            const at::Tensor& found_inf = {});
  // Bytes of optimizer state this rank holds.
  std::int64_t state_bytes() const;
  const dist::FlatLayout& layout() const { return layout_; }
  int rank() const { return rank_; }
  const std::vector<std::string>& names() const { return names_; }
  const std::vector<at::Tensor>& exp_avg() const { return exp_avg_; }
  const std::vector<at::Tensor>& exp_avg_sq() const { return exp_avg_sq_; }
  const at::Tensor& step_count() const { return step_; }
  void set_step_count(double step);

 private:
  dist::FlatLayout layout_;
  int rank_;
  std::vector<std::string> names_;
  std::vector<ParamSetting> settings_;
  AdamWOptions options_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;  // per bucket, this rank's shard
  at::Tensor step_;                               // float32 scalar, as the fused kernel wants
};

// --- the checkpoint form ----------------------------------------------------------------------
// One rank's file: tensors "exp_avg.<k>", "exp_avg_sq.<k>" (the shard of bucket k) and JSON
// {"format": "flat-shards-1", "world_size", "rank", "buckets": [{"shard_numel", "segments":
// [[name, param_offset, shard_offset, numel], ...]}], "steps": {name: step}}.
struct FlatShards {
  NamedTensors tensors;
  nlohmann::json json;
};

// The state of `optimizer` as this rank's FlatShards of `layout` (the parameters in layout order:
// names[i] is parameter i); the unsharded optimizer holds everything, so any rank can cut its own.
FlatShards to_flat_shards(const AdamW& optimizer, const dist::FlatLayout& layout, int rank,
                          const std::vector<std::string>& names);
FlatShards to_flat_shards(const ShardedAdamW& optimizer);

// One parameter's whole moments (another trainer's optimizer state, e.g. OpenCLIP's AdamW).
struct WholeMoments {
  std::string name;
  at::Tensor exp_avg, exp_avg_sq;  // any shape and float dtype; flattened
  double step = 0;
};
// `params` as the FlatShards of one rank that holds everything, one bucket per parameter:
// load_flat_shards restores them into any dist.zero stage and world size.
FlatShards whole_flat_shards(const std::vector<WholeMoments>& params);

// Every saved rank's JSON, and a reader of one saved rank's tensors (called only for the ranks
// whose pieces are needed).
struct SavedFlatShards {
  std::vector<nlohmann::json> json;  // index = saved rank
  std::function<NamedTensors(int rank)> tensors;
  std::string where;  // the checkpoint, for errors
};

// Restores from saved shards of any world size; every needed element must be present.
void load_flat_shards(AdamW& optimizer, const SavedFlatShards& saved);
void load_flat_shards(ShardedAdamW& optimizer, const SavedFlatShards& saved);

// The same form for other flat-sharded tensors of the parameters (full sharding's parameter
// shards, key "param"): this rank's shard of bucket k as tensor "<key>.<k>", no "steps".
FlatShards to_flat_shards(const dist::FlatLayout& layout, int rank,
                          const std::vector<std::string>& names,
                          const std::vector<at::Tensor>& shards, const std::string& key);
// Fills whole[i], the tensor called names[i], from such shards saved by any world size (reading
// only the ranks that hold pieces of them); every element must be present.
void load_whole_from_flat_shards(const SavedFlatShards& saved, const std::string& key,
                                 const std::vector<std::string>& names,
                                 const std::vector<at::Tensor>& whole);
// Fills shards[k], `rank`'s shard of bucket k of `layout` (names[i]: parameter i), from such
// shards saved by any world size and stage (reading only the ranks that hold pieces of it).
void load_shards_from_flat_shards(const SavedFlatShards& saved, const std::string& key,
                                  const dist::FlatLayout& layout, int rank,
                                  const std::vector<std::string>& names,
                                  const std::vector<at::Tensor>& shards);
// Whole tensors in that form (one rank that holds everything, one bucket per tensor), read back
// from memory: what load_shards_from_flat_shards cuts a rank's shards from.
SavedFlatShards whole_as_saved_flat_shards(const NamedTensors& whole, const std::string& key,
                                           const std::string& where);

}  // namespace clipper::optim
