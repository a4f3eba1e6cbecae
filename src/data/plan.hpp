#pragma once
// Internal to the loader: the epoch plan, a pure function of (data, seed, epoch, rank, world
// size, workers) that says which samples each worker of this rank reads. See docs/data.md.
#include <cstdint>
#include <vector>

#include "clipper/data/loader.hpp"
#include "clipper/data/shard_list.hpp"

namespace clipper::data::detail {

// Samples [begin, end) of a shard in tar order; end < 0: to its end.
struct Segment {
  int shard = 0;
  std::int64_t begin = 0, end = -1;
};

struct WorkerPlan {
  std::vector<Segment> segments;  // split mode: read in order, again and again if needed
  std::int64_t quota = 0;         // good samples this worker delivers this epoch
  std::uint64_t stream_seed = 0;  // shard draws (resampled) and the sample shuffle buffer
  std::uint64_t crop_seed = 0;    // per-sample crop seeds derive from it and the raw index
};

struct EpochPlan {
  std::int64_t rank_samples = 0;  // T: samples this rank delivers this epoch (same on every rank)
  std::vector<WorkerPlan> workers;
};

// The pure function behind the determinism rule. Throws InputError when the data cannot be split.
EpochPlan plan_epoch(const ShardList& list, const LoaderOptions& o, std::int64_t epoch);
// Samples per epoch over all ranks (num_samples, else the sizes.json total); -1 when unknown.
std::int64_t epoch_samples(const ShardList& list, const LoaderOptions& o);
// Samples a rank delivers per epoch.
std::int64_t rank_samples(const ShardList& list, const LoaderOptions& o);
// Good samples worker `w` of `workers` delivers out of a rank's `rank_total`; sample j of the
// rank's epoch comes from worker j % workers.
std::int64_t worker_quota(std::int64_t rank_total, int workers, int w);

}  // namespace clipper::data::detail
