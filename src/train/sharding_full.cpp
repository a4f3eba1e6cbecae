// dist.zero 3, full sharding: as zero 2 (gradients reduce-scattered into shards, each full gradient
// freed once in its bucket, AdamW over this rank's shard), and during the step every rank keeps
// only its shard of the parameters (dist/param_units.hpp): begin_step() cuts the whole parameters
// into the units' shards and frees them; operations gather a unit while they read it (at most two
// whole at once); the gradient buckets are the units; after AdamW updated the shards, every unit
// is all-gathered whole again for what runs between steps (evaluation, checkpoints, the average).
#include <ATen/ATen.h>

#include <optional>

#include "clipper/dist/grad_reducer.hpp"
#include "clipper/dist/param_units.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/train/sharding.hpp"

namespace clipper::train {
namespace {

dist::ReducerOptions unit_buckets(const ShardingSetup& s, const dist::FlatLayout& units) {
  auto o = dist::reducer_options(s.bucket_mb, s.overlap, dist::GradReduce::reduce_scatter);
  o.free_full_grads = true;
  o.layout = units;
  return o;
}

class Full : public ParameterSharding {
 public:
  explicit Full(ShardingSetup s)
      : units_(s.params, s.names, s.pg),
        reducer_(s.params, s.pg, unit_buckets(s, units_.layout())),
        optimizer_(units_.layout(), s.pg->rank(), std::move(s.names), std::move(s.settings),
                   s.adamw) {}

  void begin_step() override {
    on_demand_.reset();
    units_.release();
    on_demand_.emplace(units_);
  }
  void begin_backward() override { reducer_.begin_step(); }
  void finish_backward() override {
    reducer_.finish();
    on_demand_.reset();
  }
  std::vector<at::Tensor> gradients() const override { return reducer_.grad_shards(); }
  void step(double lr, const at::Tensor& found_inf) override {
    optimizer_.step(lr, units_.shards(), reducer_.grad_shards(), found_inf);
    units_.gather_all();
  }

  optim::FlatShards optimizer_shards() const override { return optim::to_flat_shards(optimizer_); }
  void load_optimizer_shards(const optim::SavedFlatShards& saved) override {
    optim::load_flat_shards(optimizer_, saved);
  }
  std::int64_t optimizer_state_bytes() const override { return optimizer_.state_bytes(); }
  std::int64_t peak_parameter_bytes() const override { return units_.peak_bytes(); }
  const dist::FlatLayout& layout() const override { return units_.layout(); }

 private:
  dist::ParamUnits units_;
  dist::GradReducer reducer_;
  optim::ShardedAdamW optimizer_;
  std::optional<dist::ParamUnits::OnDemand> on_demand_;
};

}  // namespace

std::unique_ptr<ParameterSharding> make_full(ShardingSetup setup) {
  return std::make_unique<Full>(std::move(setup));
}

}  // namespace clipper::train
