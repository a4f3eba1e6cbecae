#pragma once
// Data-parallel gradients without a DDP module: after backward every rank holds the mean of the
// ranks' gradients.
//
//   broadcast_tensors(params_and_buffers, *pg);          // once, before training: rank 0's values
//   GradReducer reducer(params, pg, cfg.dist.bucket_mb, cfg.dist.overlap_grad_reduce);
//   for each step:
//     (micro-batches that only accumulate: plain backward)
//     reducer.begin_step();      // before the backward that completes the step's gradients
//     loss.backward();
//     reducer.finish();          // gradients are now the mean over ranks
//     optimizer step
//
// Gradients are copied into flat buckets of about bucket_mb MB (one dtype and device each,
// filled from the last parameter to the first, the order backward produces them), all-reduced
// with SUM and divided by the world size. With overlap, a hook on each parameter's gradient
// accumulator launches a bucket's all-reduce as soon as all its gradients exist, during backward;
// buckets always launch in the same order on every rank. Without overlap (or for buckets the hooks
// did not launch) finish() launches them. A parameter without a gradient counts as zeros, and
// finish() gives it a zero gradient, so every rank applies the same update.
//
// Reduce-scatter (the sharded stages, train/sharding.hpp): buckets are padded to a multiple of the
// world size and reduce-scattered instead: after finish() each rank holds only its shard of every
// bucket's mean gradient (grad_shards(), see flat_layout.hpp); parameters' .grad() are not
// averaged. The optimizer updates param_shards() and all_gather_params() writes every rank's
// updated shard back into the whole parameters. free_full_grads also frees each parameter's full
// gradient as soon as it is copied into its bucket, and the bucket's flat buffer once it is
// reduce-scattered: before copying a bucket the reducer waits for the one launched two before
// it, so at most two flat buffers exist at once. The buckets are cut by bucket_mb unless a layout
// is given (one bucket per unit of full sharding, dist/param_units.hpp).
#include <ATen/core/Tensor.h>

#include <memory>
#include <optional>
#include <vector>

#include "clipper/dist/flat_layout.hpp"

namespace clipper::dist {

class ProcessGroup;

enum class GradReduce { all_reduce, reduce_scatter };

struct ReducerOptions {
  double bucket_mb = 25.0;
  bool overlap = true;
  GradReduce reduce = GradReduce::all_reduce;
  bool free_full_grads = false;      // reduce_scatter only
  std::optional<FlatLayout> layout;  // reduce_scatter only: the buckets, padded to the world size
};

inline ReducerOptions reducer_options(double bucket_mb, bool overlap,
                                      GradReduce reduce = GradReduce::all_reduce) {
  ReducerOptions o;
  o.bucket_mb = bucket_mb;
  o.overlap = overlap;
  o.reduce = reduce;
  return o;
}

class GradReducer {
 public:
  // params: the trainable parameters in model order, those that get a gradient every step (with
  // overlap, one that gets none holds its bucket and the later ones back until finish()).
  GradReducer(std::vector<at::Tensor> params, std::shared_ptr<ProcessGroup> pg, double bucket_mb,
              bool overlap);
  GradReducer(std::vector<at::Tensor> params, std::shared_ptr<ProcessGroup> pg,
              ReducerOptions options);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // Arms the hooks for the next backward pass (no effect without overlap or with one rank).
  void begin_step();
  // Launches what is left, waits for every bucket, writes the averaged gradients back.
  void finish();

  std::size_t num_buckets() const;
  // Bytes in each bucket, in launch order.
  std::vector<std::size_t> bucket_bytes() const;
  // Buckets the hooks launched during the last backward (the rest waited for finish()).
  std::size_t launched_by_hooks() const;
  // The most gradient bytes held at once since the last begin_step(): full gradients, flat
  // buckets and shards.
  std::int64_t peak_gradient_bytes() const;

  // Reduce-scatter only. The bucket layout (padded to the world size; all-reduce on one rank:
  // empty).
  const FlatLayout& layout() const;
  // This rank's shard of each bucket's mean gradient, valid after finish().
  const std::vector<at::Tensor>& grad_shards() const;
  // This rank's shard of each bucket's parameters (fresh copies; padding is zero).
  std::vector<at::Tensor> param_shards() const;
  // Every rank's updated shards (param_shards() after the optimizer) -> the whole parameters.
  void all_gather_params(const std::vector<at::Tensor>& shards);

  struct State;

 private:
  std::shared_ptr<State> state_;
};

// Replaces every tensor's values with rank `root`'s (parameters and buffers at start-up), in flat
// buckets of about bucket_mb MB.
void broadcast_tensors(const std::vector<at::Tensor>& tensors, ProcessGroup& pg, int root = 0,
                       double bucket_mb = 25.0);

// DDP's broadcast_buffers (on by default there): rank 0's buffers (BatchNorm running statistics
// and counters) copied to every rank after each step's forward passes, so every rank holds rank
// 0's model, as DDP makes it before each forward. A no-op on one rank or without buffers.
void broadcast_buffers(const std::vector<at::Tensor>& buffers, ProcessGroup& pg);

}  // namespace clipper::dist
