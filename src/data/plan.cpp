#include "plan.hpp"

#include <algorithm>
#include <string>

#include "budget.hpp"
#include "clipper/core/error.hpp"
#include "rng.hpp"

namespace clipper::data::detail {
namespace {

// WebDataset's buffered shuffle of the shard order.
std::vector<int> buffered_shuffle(const std::vector<int>& in, std::size_t bufsize, Rng& rng) {
  if (bufsize <= 1) return in;
  std::vector<int> out, buf;
  out.reserve(in.size());
  auto pop = [&] {
    const std::size_t i = rng.below(buf.size());
    out.push_back(buf[i]);
    buf[i] = buf.back();
    buf.pop_back();
  };
  for (int v : in) {
    buf.push_back(v);
    if (buf.size() >= bufsize) pop();
  }
  while (!buf.empty()) pop();
  return out;
}

std::vector<int> shard_order(const ShardList& list, const LoaderOptions& o, std::int64_t epoch) {
  std::vector<int> order(list.shards.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  if (o.train && o.shard_shuffle_buffer > 0) {
    Rng rng(mix_seed(o.seed, 0x5348415244ULL, epoch));
    order = buffered_shuffle(order, static_cast<std::size_t>(o.shard_shuffle_buffer), rng);
  }
  return order;
}

// With sizes known: the samples of the shard order laid end to end; rank r owns a contiguous
// range, split among its workers in proportion to their quotas.
void split_samples(const ShardList& list, const LoaderOptions& o, const std::vector<int>& order,
                   EpochPlan& plan) {
  const int W = o.world_size, K = o.workers, r = o.rank;
  const std::int64_t T = plan.rank_samples, total = list.total_size();
  const auto lo = static_cast<std::int64_t>(static_cast<__int128>(total) * r / W);
  const auto hi = static_cast<std::int64_t>(static_cast<__int128>(total) * (r + 1) / W);
  const std::int64_t n = hi - lo;
  std::int64_t cum_q = 0;
  for (int w = 0; w < K; ++w) {
    const std::int64_t q = plan.workers[w].quota;
    const auto a = lo + static_cast<std::int64_t>(static_cast<__int128>(cum_q) * n / T);
    const auto b = lo + static_cast<std::int64_t>(static_cast<__int128>(cum_q + q) * n / T);
    cum_q += q;
    if (q > 0)
      core::require(b > a, "data: " + std::to_string(total) + " samples cannot feed " +
                               std::to_string(W) + " rank(s) x " + std::to_string(K) + " workers");
    std::int64_t pos = 0;
    for (int idx : order) {
      const std::int64_t sz = list.shards[idx].size;
      const std::int64_t s0 = std::max(a, pos), s1 = std::min(b, pos + sz);
      if (s1 > s0) plan.workers[w].segments.push_back(Segment{idx, s0 - pos, s1 - pos});
      pos += sz;
      if (pos >= b) break;
    }
  }
}

// Without sizes: whole shards, dealt round-robin to ranks and then to workers.
void split_shards(const LoaderOptions& o, const std::vector<int>& order, EpochPlan& plan) {
  const int W = o.world_size, K = o.workers, r = o.rank;
  core::require(
      static_cast<std::int64_t>(order.size()) >= static_cast<std::int64_t>(W) * K,
      "data: " + std::to_string(order.size()) + " shards cannot be split across " +
          std::to_string(W) + " rank(s) x " + std::to_string(K) +
          " workers without sizes.json; add sizes.json beside the shards or use fewer workers");
  for (std::size_t i = 0; i < order.size(); ++i) {
    if (static_cast<int>(i % W) != r) continue;
    const int w = static_cast<int>((i / W) % K);
    plan.workers[w].segments.push_back(Segment{order[i], 0, -1});
  }
}

}  // namespace

std::int64_t worker_quota(std::int64_t rank_total, int workers, int w) {
  return rank_total / workers + (w < rank_total % workers ? 1 : 0);
}

std::int64_t epoch_samples(const ShardList& list, const LoaderOptions& o) {
  if (o.num_samples > 0) return o.num_samples;
  return list.total_size();
}

std::int64_t rank_samples(const ShardList& list, const LoaderOptions& o) {
  const std::int64_t N = epoch_samples(list, o);
  core::require(N >= 0,
                "data: the number of samples is unknown: no sizes.json beside the shards of '" +
                    o.shards + "' lists every shard, and data.train_num_samples is 0");
  const std::int64_t W = o.world_size, B = o.batch_size;
  if (o.token_budget()) {
    const std::int64_t T = budget_rank_samples(o, 0, o.drop_last ? N / W : (N + W - 1) / W);
    core::require(T > 0, "data: " + std::to_string(N) + " samples are too few for " +
                             std::to_string(W) + " rank(s) x one batch of data.naflex_seq_lens " +
                             budget_text(o) + (o.drop_last ? " with drop_last" : ""));
    return T;
  }
  std::int64_t T = o.drop_last ? (N / (W * B)) * B : (N + W - 1) / W;
  core::require(T > 0, "data: " + std::to_string(N) + " samples are too few for " +
                           std::to_string(W) + " rank(s) x batch " + std::to_string(B) +
                           (o.drop_last ? " with drop_last" : ""));
  return T;
}

EpochPlan plan_epoch(const ShardList& list, const LoaderOptions& o, std::int64_t epoch,
                     std::int64_t rank_total) {
  const int W = o.world_size, K = o.workers, r = o.rank;
  core::require(W >= 1 && r >= 0 && r < W,
                "data: rank " + std::to_string(r) + " outside world size " + std::to_string(W));
  core::require(K >= 1, "data.workers must be at least 1");
  core::require(!list.shards.empty(), "data: the shard list '" + o.shards + "' is empty");
  EpochPlan plan;
  plan.rank_samples = rank_total > 0 ? rank_total : rank_samples(list, o);
  plan.workers.resize(K);
  for (int w = 0; w < K; ++w) {
    auto& wp = plan.workers[w];
    wp.quota = worker_quota(plan.rank_samples, K, w);
    wp.stream_seed = mix_seed(o.seed, 0x5354524541ULL, epoch, r, W, w, K);
    wp.crop_seed = mix_seed(o.seed, 0x43524f50ULL, epoch, r, W, w, K);
  }
  if (o.resampled) return plan;
  const auto order = shard_order(list, o, epoch);
  if (list.sizes_known())
    split_samples(list, o, order, plan);
  else
    split_shards(o, order, plan);
  return plan;
}

std::int64_t resplit_rank_samples(std::int64_t rest, const LoaderOptions& o, std::uint64_t salt) {
  const std::int64_t W = o.world_size, B = o.batch_size;
  if (o.token_budget())
    return budget_rank_samples(o, salt, o.drop_last ? rest / W : (rest + W - 1) / W);
  return o.drop_last ? (rest / (W * B)) * B : (rest + W - 1) / W;
}

namespace {

// Appends the pieces holding good samples [begin, begin + n) of `rest` (no wrap) to `out`.
void cut(const std::vector<Piece>& rest, std::int64_t begin, std::int64_t n, bool repeated,
         std::vector<Piece>& out) {
  std::int64_t at = 0;
  for (const Piece& p : rest) {
    const std::int64_t lo = std::max(begin, at), hi = std::min(begin + n, at + p.count);
    if (hi > lo) {
      Piece q = p;
      q.skip = p.skip + (lo - at);
      q.count = hi - lo;
      q.repeated = p.repeated || repeated;
      out.push_back(q);
    }
    at += p.count;
    if (at >= begin + n) break;
  }
}

}  // namespace

std::vector<std::vector<Piece>> resplit(const std::vector<Piece>& rest, const LoaderOptions& o,
                                        std::uint64_t salt) {
  std::int64_t R = 0;
  for (const Piece& p : rest) R += p.count;
  const std::int64_t T = resplit_rank_samples(R, o, salt);
  std::vector<std::vector<Piece>> out(static_cast<std::size_t>(o.workers));
  std::int64_t begin = static_cast<std::int64_t>(o.rank) * T;
  for (int w = 0; w < o.workers; ++w) {
    // A range may wrap past the end more than once when R < T.
    for (std::int64_t n = worker_quota(T, o.workers, w); n > 0 && R > 0;) {
      const std::int64_t b = begin % R, take = std::min(n, R - b);
      cut(rest, b, take, begin >= R, out[static_cast<std::size_t>(w)]);
      begin += take;
      n -= take;
    }
  }
  return out;
}

}  // namespace clipper::data::detail
