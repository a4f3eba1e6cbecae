#include "source.hpp"

#include <algorithm>

#include "counters.hpp"

namespace clipper::data::detail {

Source::Source(const ShardList& list, const LoaderOptions& options, const WorkerPlan& plan,
               OnEvent on_event)
    : list_(list),
      o_(options),
      plan_(plan),
      on_event_(std::move(on_event)),
      draw_rng_(mix_seed(plan.stream_seed, 1)) {
  by_source_.resize(list_.source_weights.size());
  for (std::size_t i = 0; i < list_.shards.size(); ++i)
    by_source_[list_.shards[i].source].push_back(static_cast<int>(i));
}

Source::~Source() = default;

Source::Result Source::next(Pulled& out) {
  while (true) {
    if (!reader_ && !open_next()) return failed_ ? failed : pass_end;
    if (reader_->next(out.sample)) {
      const std::int64_t p = pos_++;
      if (p < seg_.begin) continue;
      if (seg_.end >= 0 && p >= seg_.end) {
        reader_.reset();
        continue;
      }
      ++pass_count_;
      empty_draws_ = 0;
      out.shard = seg_.shard;
      out.repeated = pass_ > 0;
      return sample;
    }
    const auto st = reader_->status();
    if (st != ShardStatus::ok) {
      const int kind = st == ShardStatus::unreadable  ? kShardUnreadable
                       : st == ShardStatus::truncated ? kShardTruncated
                                                      : kPipeFailed;
      on_event_(kind, reader_->url(), reader_->error());
    }
    reader_.reset();
  }
}

void Source::fail(std::string why) {
  failed_ = true;
  failure_ = std::move(why);
}

bool Source::draw_shard() {
  if (++empty_draws_ > 200) {
    fail("no sample could be read from 200 shards drawn in a row from '" + o_.shards + "'");
    return false;
  }
  const double u = draw_rng_.uniform();
  double acc = 0;
  std::size_t src = 0;
  for (; src + 1 < list_.source_weights.size(); ++src) {
    acc += list_.source_weights[src];
    if (u < acc) break;
  }
  const auto& shards = by_source_[src];
  seg_ = Segment{shards[draw_rng_.below(shards.size())], 0, -1};
  return true;
}

bool Source::next_segment() {
  const auto& segs = plan_.segments;
  if (segs.empty()) {
    fail("this worker was given no shards");
    return false;
  }
  if (next_seg_ < segs.size()) {
    seg_ = segs[next_seg_++];
    return true;
  }
  // The end of a pass; one without a single sample means the part is unusable.
  next_seg_ = 0;
  const bool empty = pass_count_ == 0;
  largest_pass_ = std::max(largest_pass_, pass_count_);
  ++pass_;
  pass_count_ = 0;
  if (empty) {
    std::string names;
    for (std::size_t i = 0; i < segs.size() && i < 5; ++i)
      names += (i ? ", " : "") + list_.shards[segs[i].shard].url;
    fail("no sample could be read from the worker's shards (" + names +
         (segs.size() > 5 ? ", ..." : "") + ")");
  }
  return false;
}

bool Source::open_next() {
  if (!(o_.resampled ? draw_shard() : next_segment())) return false;
  reader_ = std::make_unique<ShardReader>(list_.shards[seg_.shard].url, o_.max_sample_bytes);
  pos_ = 0;
  return true;
}

}  // namespace clipper::data::detail
