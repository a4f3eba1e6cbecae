#pragma once
// `clipper bench loss`: the peak memory one rank allocates for the contrastive loss (forward and
// backward) on the CPU, counted by a CPU allocator that tracks live bytes; run it under
// `clipper launch --nproc-per-node W` to see how it grows with the world size (Gloo).
#include <cstdint>
#include <string>

#include "clipper/config/config.hpp"

namespace clipper::bench {

struct LossBenchOptions {
  config::LossConfig loss;   // kind, local_loss, siglip_exchange, chunked
  std::int64_t batch = 256;  // per rank
  std::int64_t dim = 512;
  std::int64_t steps = 3;  // the peak is the largest of these forward + backward passes
};

struct LossBenchResult {
  std::string form;  // e.g. "clip local chunked"
  std::int64_t world_size = 1, rank = 0, batch = 0, dim = 0;
  std::int64_t peak_bytes = 0;  // most live bytes above the inputs, worst rank
  double step_ms = 0;           // mean forward + backward, rank 0
  std::string to_text() const;
};

// Installs the counting CPU allocator for the rest of the process.
LossBenchResult bench_loss(const LossBenchOptions& options);

}  // namespace clipper::bench
