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
// `rank_total` (> 0) stands in for rank_samples(list, o): the T of a saved layout whose batch size
// is not this run's.
EpochPlan plan_epoch(const ShardList& list, const LoaderOptions& o, std::int64_t epoch,
                     std::int64_t rank_total = 0);
// Samples per epoch over all ranks (num_samples, else the sizes.json total); -1 when unknown.
std::int64_t epoch_samples(const ShardList& list, const LoaderOptions& o);
// Samples a rank delivers per epoch.
std::int64_t rank_samples(const ShardList& list, const LoaderOptions& o);
// Good samples worker `w` of `workers` delivers out of a rank's `rank_total`; sample j of the
// rank's epoch comes from worker j % workers.
std::int64_t worker_quota(std::int64_t rank_total, int workers, int w);

// The re-split of a mid-epoch position onto another layout (docs/data.md, "Another world size").
// A piece is a run of one saved stream's good samples: the stream of worker `worker` of rank
// `rank` in the layout that planned the epoch; from raw index `raw` on (skipped undecoded), skip
// `skip` good samples, then deliver `count`. `repeated`: a second delivery, to fill a rank.
struct Piece {
  int rank = 0, worker = 0;
  std::int64_t raw = 0, skip = 0, count = 0;
  bool repeated = false;
};

// Good samples a rank of `o`'s layout delivers out of the `rest` left of an epoch (all ranks).
// Token-budget batches: `salt` is the batch index the rest starts at (budget.hpp).
std::int64_t resplit_rank_samples(std::int64_t rest, const LoaderOptions& o,
                                  std::uint64_t salt = 0);

// Rank o.rank's pieces per worker: the global list `rest` (R good samples in its order) cut into
// contiguous ranges, rank r taking [r*T, (r+1)*T) (T = resplit_rank_samples) and its worker w the
// next worker_quota(T, K, w) of them; positions past R wrap to the start and are marked repeated.
std::vector<std::vector<Piece>> resplit(const std::vector<Piece>& rest, const LoaderOptions& o,
                                        std::uint64_t salt = 0);

}  // namespace clipper::data::detail
