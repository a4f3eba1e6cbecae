// The epoch plan on its own: a pure function of (data, seed, epoch, rank, world size, workers)
// that gives every sample to exactly one worker of one rank, with quotas that add up.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "clipper/core/error.hpp"
#include "plan.hpp"

using namespace clipper;
using data::detail::EpochPlan;
using data::detail::plan_epoch;

namespace {

data::ShardList shards(const std::vector<std::int64_t>& sizes) {
  data::ShardList l;
  for (std::size_t i = 0; i < sizes.size(); ++i)
    l.shards.push_back({"s" + std::to_string(i) + ".tar", 0, sizes[i]});
  l.source_weights = {1.0};
  return l;
}

data::LoaderOptions opts(int W, int r, int K) {
  data::LoaderOptions o;
  o.shards = "s{0..n}.tar";
  o.world_size = W;
  o.rank = r;
  o.workers = K;
  o.batch_size = 4;
  o.seed = 3;
  o.shard_shuffle_buffer = 100;
  return o;
}

// (shard, sample) pairs of a plan's segments.
std::multiset<std::pair<int, std::int64_t>> samples_of(const EpochPlan& p,
                                                       const data::ShardList& l) {
  std::multiset<std::pair<int, std::int64_t>> out;
  for (const auto& w : p.workers)
    for (const auto& s : w.segments) {
      const std::int64_t end = s.end < 0 ? l.shards[s.shard].size : s.end;
      for (std::int64_t i = s.begin; i < end; ++i) out.insert({s.shard, i});
    }
  return out;
}

std::vector<int> shard_sequence(const EpochPlan& p) {
  std::vector<int> seq;
  for (const auto& w : p.workers)
    for (const auto& s : w.segments) seq.push_back(s.shard);
  return seq;
}

}  // namespace

TEST(EpochPlan, EverySampleToExactlyOneWorkerOfOneRank) {
  const auto l = shards({7, 3, 10, 1, 9, 5});  // 35 samples
  for (int W : {1, 2, 3, 5})
    for (int K : {1, 2, 4}) {
      std::multiset<std::pair<int, std::int64_t>> all;
      for (int r = 0; r < W; ++r) {
        const auto p = plan_epoch(l, opts(W, r, K), 1);
        const auto mine = samples_of(p, l);
        all.insert(mine.begin(), mine.end());
      }
      EXPECT_EQ(all.size(), 35u) << "W=" << W << " K=" << K;
      const std::set<std::pair<int, std::int64_t>> distinct(all.begin(), all.end());
      EXPECT_EQ(distinct.size(), 35u) << "W=" << W << " K=" << K;
    }
}

TEST(EpochPlan, QuotasAddUpToTheRankShare) {
  const auto l = shards({7, 3, 10, 1, 9, 5});
  for (int W : {1, 2, 4})
    for (int K : {1, 3}) {
      const auto p = plan_epoch(l, opts(W, 0, K), 0);
      EXPECT_EQ(p.rank_samples, (35 + W - 1) / W);
      std::int64_t sum = 0, lo = 1 << 30, hi = 0;
      for (int w = 0; w < K; ++w) {
        const auto q = p.workers[w].quota;
        EXPECT_EQ(q, data::detail::worker_quota(p.rank_samples, K, w));
        sum += q;
        lo = std::min(lo, q);
        hi = std::max(hi, q);
      }
      EXPECT_EQ(sum, p.rank_samples);
      EXPECT_LE(hi - lo, 1);
    }
  auto o = opts(2, 1, 2);
  o.drop_last = true;  // floor(35 / (2 * 4)) = 4 batches of 4 per rank
  EXPECT_EQ(plan_epoch(l, o, 0).rank_samples, 16);
}

TEST(EpochPlan, PureInItsInputsAndShuffledPerEpoch) {
  const auto l = shards(std::vector<std::int64_t>(20, 4));
  const auto o = opts(2, 1, 2);
  const auto a = plan_epoch(l, o, 5), b = plan_epoch(l, o, 5), c = plan_epoch(l, o, 6);
  EXPECT_EQ(shard_sequence(a), shard_sequence(b));
  for (std::size_t w = 0; w < a.workers.size(); ++w) {
    EXPECT_EQ(a.workers[w].stream_seed, b.workers[w].stream_seed);
    EXPECT_EQ(a.workers[w].crop_seed, b.workers[w].crop_seed);
    EXPECT_NE(a.workers[w].stream_seed, c.workers[w].stream_seed);
  }
  EXPECT_NE(a.workers[0].stream_seed, a.workers[1].stream_seed);
  EXPECT_NE(shard_sequence(a), shard_sequence(c));
  // Evaluation keeps the list order: rank 1 of 2 owns the second half, shards 10..19.
  auto e = o;
  e.train = false;
  auto seq = shard_sequence(plan_epoch(l, e, 6));
  std::vector<int> want;
  for (int i = 10; i < 20; ++i) want.push_back(i);
  EXPECT_EQ(seq, want);
}

TEST(EpochPlan, WithoutSizesWholeShardsRoundRobin) {
  auto l = shards(std::vector<std::int64_t>(6, -1));
  auto o = opts(2, 0, 2);
  o.num_samples = 60;
  o.shard_shuffle_buffer = 0;
  const auto p = plan_epoch(l, o, 0);
  ASSERT_EQ(p.workers.size(), 2u);
  // Shards 0, 2, 4 go to rank 0, dealt to its workers in turn.
  std::vector<int> w0, w1;
  for (const auto& s : p.workers[0].segments) {
    w0.push_back(s.shard);
    EXPECT_EQ(s.begin, 0);
    EXPECT_EQ(s.end, -1);
  }
  for (const auto& s : p.workers[1].segments) w1.push_back(s.shard);
  EXPECT_EQ(w0, (std::vector<int>{0, 4}));
  EXPECT_EQ(w1, (std::vector<int>{2}));
  o.world_size = 4;
  try {
    plan_epoch(l, o, 0);
    FAIL() << "expected an error";
  } catch (const core::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("sizes.json"), std::string::npos) << e.what();
  }
}

TEST(EpochPlan, ResampledHasNoSegmentsAndUnknownSizesAreAnError) {
  auto l = shards({5, 5});
  auto o = opts(1, 0, 3);
  o.resampled = true;
  const auto p = plan_epoch(l, o, 0);
  for (const auto& w : p.workers) EXPECT_TRUE(w.segments.empty());
  EXPECT_EQ(p.workers[0].quota + p.workers[1].quota + p.workers[2].quota, 10);
  const auto unknown = shards({5, -1});
  try {
    plan_epoch(unknown, opts(1, 0, 1), 0);
    FAIL() << "expected an error";
  } catch (const core::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("train_num_samples"), std::string::npos) << e.what();
  }
  EXPECT_THROW(plan_epoch(l, opts(2, 2, 1), 0), core::InputError);  // rank outside the world
}
