// dist.zero 1: the AdamW moments sharded over the ranks (docs/distributed.md, "Sharded optimizer
// state and gradients"). The gradient buckets are reduce-scattered; each rank updates its shard.
#include "sharding_zero1.hpp"

#include <ATen/ATen.h>

#include "clipper/dist/process_group.hpp"

namespace clipper::train {
namespace {

dist::ReducerOptions scatter_options(const ShardingSetup& s, bool free_full_grads) {
  auto o = dist::reducer_options(s.bucket_mb, s.overlap, dist::GradReduce::reduce_scatter);
  o.free_full_grads = free_full_grads;
  return o;
}

}  // namespace

Zero1::Zero1(ShardingSetup s, bool free_full_grads)
    : params_(s.params),
      reducer_(s.params, s.pg, scatter_options(s, free_full_grads)),
      optimizer_(reducer_.layout(), s.pg->rank(), std::move(s.names), std::move(s.settings),
                 s.adamw) {}

void Zero1::step(double lr, const at::Tensor& found_inf) {
  std::vector<at::Tensor> shards = reducer_.param_shards();
  optimizer_.step(lr, shards, reducer_.grad_shards(), found_inf);
  reducer_.all_gather_params(shards);
}

optim::FlatShards Zero1::optimizer_shards() const {
  return optim::to_flat_shards(optimizer_);
}

void Zero1::load_optimizer_shards(const optim::SavedFlatShards& saved) {
  optim::load_flat_shards(optimizer_, saved);
}

std::unique_ptr<ParameterSharding> make_zero1(ShardingSetup setup) {
  return std::make_unique<Zero1>(std::move(setup), /*free_full_grads=*/false);
}

}  // namespace clipper::train
