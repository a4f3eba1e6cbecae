// dist.zero 3, full sharding: as zero 2 (gradients reduce-scattered into shards, each full gradient
// freed once in its bucket, AdamW over this rank's shard), and every rank keeps only its shard of
// the parameters (dist/param_units.hpp): the model is whole from construction (and a checkpoint
// load) until the first begin_step() cuts the units' shards and frees them; operations gather a
// unit while they read it (at most two whole at once, three with prefetch); the gradient buckets
// are the units. After AdamW updated the shards, the units gathered for the step are stale and
// dropped; what runs between steps gathers on demand (between_steps: the clamp, the average) or
// gathers everything for a while (gather_whole: evaluation, checkpoints, export).
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
      : units_(s.params, s.names, s.pg, {2, s.prefetch, s.gather_bf16}),
        reducer_(s.params, s.pg, unit_buckets(s, units_.layout())),
        optimizer_(units_.layout(), s.pg->rank(), std::move(s.names), std::move(s.settings),
                   s.adamw) {}

  void begin_step() override {
    on_demand_.reset();
    units_.release();
    units_.reset_peak();
    on_demand_.emplace(units_, dist::ParamUnits::Pass::step);
  }
  void begin_backward() override { reducer_.begin_step(); }
  void finish_backward() override {
    reducer_.finish();
    on_demand_.reset();
  }
  std::vector<at::Tensor> gradients() const override { return reducer_.grad_shards(); }
  void step(double lr, const at::Tensor& found_inf) override {
    units_.drop();
    optimizer_.step(lr, units_.shards(), reducer_.grad_shards(), found_inf);
  }
  void between_steps(const std::function<void()>& fn) override {
    {
      dist::ParamUnits::OnDemand scope(units_, dist::ParamUnits::Pass::other);
      fn();
    }
    units_.release();
  }
  void gather_whole() override { units_.gather_all(); }
  void release_whole() override { units_.release(); }

  optim::FlatShards optimizer_shards() const override { return optim::to_flat_shards(optimizer_); }
  void load_optimizer_shards(const optim::SavedFlatShards& saved) override {
    optim::load_flat_shards(optimizer_, saved);
  }
  std::int64_t optimizer_state_bytes() const override { return optimizer_.state_bytes(); }
  std::int64_t peak_parameter_bytes() const override { return units_.peak_bytes(); }
  std::int64_t peak_gradient_bytes() const override { return reducer_.peak_gradient_bytes(); }
  ShardingCounters counters() const override {
    const auto c = units_.counters();
    return {units_.peak_bytes(),   units_.resident_bytes(),
            peak_gradient_bytes(), c.gathers,
            c.prefetched,          c.wait_s};
  }
  const dist::FlatLayout& layout() const override { return units_.layout(); }
  std::optional<optim::FlatShards> parameter_shards() override {
    return optim::to_flat_shards(units_.layout(), optimizer_.rank(), optimizer_.names(),
                                 units_.current_shards(), "param");
  }
  std::vector<at::Tensor> current_parameter_shards() override { return units_.current_shards(); }

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
