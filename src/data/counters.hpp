#pragma once
// Internal to the loader: the kinds of bad data, one table row each (counters.cpp), and the
// rate-limited warning that names the shard and sample.
#include <cstdint>
#include <string>

#include "clipper/data/loader.hpp"

namespace clipper::data::detail {

enum CounterKind {
  kImageCorrupt,
  kImageTooLarge,
  kMissingImage,
  kMissingText,
  kMissingLabel,
  kBadRegions,
  kShardUnreadable,
  kShardTruncated,
  kPipeFailed,
  kNumCounters
};

struct CounterInfo {
  CounterKind kind;
  std::int64_t BadDataCounters::*field;
  const char* json;     // name in the loader state and metrics
  const char* message;  // short description in warnings and errors
  bool per_sample;      // a bad sample (counts towards max_bad_fraction), else a shard problem
};

// The row of `kind`; throws std::out_of_range for a kind outside the table.
const CounterInfo& counter_info(int kind);
void add_counter(BadDataCounters& c, int kind);
// "corrupt image 2, too large 0, ..." over the per-sample kinds.
std::string bad_sample_summary(const BadDataCounters& c);
// A warning naming the shard (and the sample, when `key` is set), at most one per kind every 10 s.
void warn_bad(int kind, const std::string& shard, const std::string& key, const std::string& why);

}  // namespace clipper::data::detail
