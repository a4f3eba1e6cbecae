#pragma once
// `clipper plan`: per-rank memory and per-step communication of a training configuration, on
// paper (nothing is allocated): parameters, gradients and AdamW state for dist.zero 0..3,
// activations estimated from the towers' shapes, the contrastive loss's buffers, and the bytes
// each collective sends per step with the time they take at a given bandwidth.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "clipper/model/model_spec.hpp"

namespace clipper::bench {

struct PlanOptions {
  std::int64_t world = 8;
  std::int64_t batch = 256;  // per rank
  int zero = 0;  // 0: replicated; 1: optimizer state sharded; 2: + gradients; 3: + parameters
  bool prefetch = false;     // zero 3: one more unit gathered while the current one computes
  bool gather_bf16 = false;  // zero 3: parameters all-gathered in bf16
  bool bf16 = true;
  bool grad_checkpointing = false;
  bool local_loss = true;
  bool gather_with_grad = true;
  bool chunked = false;  // loss.chunked: one peer block at a time around the ring
  bool gloo = false;     // a CPU (Gloo) group: the losses first check the ranks' batch sizes
  std::int64_t ranks_per_node = 8;
  double intra_node_gbs = 400;  // GB/s per rank inside a node (NVLink)
  double inter_node_gbs = 50;   // GB/s per rank between nodes (400 Gb/s InfiniBand)
  double bucket_mb = 25;
};

struct Collective {
  std::string name;
  double payload_bytes = 0;  // what the caller hands the collective, per rank and step
  double sent_bytes = 0;     // what a ring algorithm sends per rank
  double seconds = 0;        // sent / bandwidth (inter-node when the world spans nodes)
};

struct Plan {
  double parameters = 0, gradients = 0, optimizer = 0, activations = 0, loss = 0;  // bytes
  std::vector<Collective> collectives;
  double total_memory() const { return parameters + gradients + optimizer + activations + loss; }
  double comm_seconds() const;
};

Plan make_plan(const model::ModelSpec& spec, const PlanOptions& options);
std::string plan_to_text(const model::ModelSpec& spec, const PlanOptions& o, const Plan& p);
std::string plan_to_json(const model::ModelSpec& spec, const PlanOptions& o, const Plan& p);

}  // namespace clipper::bench
