#pragma once
// dist.zero 1 (and the base of 2): AdamW over this rank's shard of the flat gradient buckets
// (optim/sharded_adamw.hpp). Private to src/train.
#include <memory>
#include <vector>

#include "clipper/dist/grad_reducer.hpp"
#include "clipper/train/sharding.hpp"

namespace clipper::train {

class Zero1 : public ParameterSharding {
 public:
  // free_full_grads: zero 2's freeing of each full gradient once it is in its bucket.
  Zero1(ShardingSetup s, bool free_full_grads);

  void begin_backward() override { reducer_.begin_step(); }
  void finish_backward() override { reducer_.finish(); }
  std::vector<at::Tensor> gradients() const override { return reducer_.grad_shards(); }
  // AdamW on this rank's shard (copied out of the whole parameters), then every rank's shard
  // into the whole parameters.
  void step(double lr, const at::Tensor& found_inf) override;

  optim::FlatShards optimizer_shards() const override;
  void load_optimizer_shards(const optim::SavedFlatShards& saved) override;
  std::int64_t optimizer_state_bytes() const override { return optimizer_.state_bytes(); }
  std::int64_t peak_parameter_bytes() const override { return bytes_of(params_); }
  std::int64_t peak_gradient_bytes() const override { return reducer_.peak_gradient_bytes(); }
  const dist::FlatLayout& layout() const override { return reducer_.layout(); }

 private:
  std::vector<at::Tensor> params_;
  dist::GradReducer reducer_;
  optim::ShardedAdamW optimizer_;
};

}  // namespace clipper::train
