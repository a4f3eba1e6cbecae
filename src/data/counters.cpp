#include "counters.hpp"

#include <chrono>
#include <stdexcept>

#include "clipper/core/log.hpp"

namespace clipper::data {
namespace detail {
namespace {

using C = BadDataCounters;
// Every kind of bad data, once: the enum order, the counter field, its JSON name and message.
constexpr CounterInfo kTable[] = {
    {kImageCorrupt, &C::image_corrupt, "image_corrupt", "corrupt image", true},
    {kImageTooLarge, &C::image_too_large, "image_too_large", "image too large", true},
    {kMissingImage, &C::missing_image, "missing_image", "no image", true},
    {kMissingText, &C::missing_text, "missing_text", "no text", true},
    {kMissingLabel, &C::missing_label, "missing_label", "no label", true},
    {kBadRegions, &C::bad_regions, "bad_regions", "invalid regions", true},
    {kShardUnreadable, &C::shard_unreadable, "shard_unreadable", "unreadable shard", false},
    {kShardTruncated, &C::shard_truncated, "shard_truncated", "truncated shard", false},
    {kPipeFailed, &C::pipe_failed, "pipe_failed", "pipe failed", false},
};
static_assert(sizeof(kTable) / sizeof(kTable[0]) == kNumCounters, "one row per CounterKind");

constexpr bool rows_in_enum_order() {
  for (int i = 0; i < kNumCounters; ++i)
    if (kTable[i].kind != i) return false;
  return true;
}
static_assert(rows_in_enum_order(), "the rows follow the CounterKind order");

std::int64_t sum(const C& c, bool per_sample) {
  std::int64_t n = 0;
  for (const auto& row : kTable)
    if (row.per_sample == per_sample) n += c.*row.field;
  return n;
}

core::log::RateLimiter& warn_limiter() {
  static core::log::RateLimiter limiter(std::chrono::seconds(10));
  return limiter;
}

}  // namespace

const CounterInfo& counter_info(int kind) {
  if (kind < 0 || kind >= kNumCounters)
    throw std::out_of_range("data: no bad-data counter " + std::to_string(kind));
  return kTable[kind];
}

void add_counter(BadDataCounters& c, int kind) {
  if (kind >= 0 && kind < kNumCounters) ++(c.*kTable[kind].field);
}

std::string bad_sample_summary(const BadDataCounters& c) {
  std::string s;
  for (const auto& row : kTable)
    if (row.per_sample)
      s += (s.empty() ? "" : ", ") + std::string(row.message) + " " + std::to_string(c.*row.field);
  return s;
}

void warn_bad(int kind, const std::string& shard, const std::string& key, const std::string& why) {
  const char* what = kind >= 0 && kind < kNumCounters ? kTable[kind].message : "?";
  long long held = 0;
  if (!warn_limiter().allow(what, &held)) return;
  CLIPPER_WARN(
      "data: skipped " << (key.empty() ? "shard" : "sample '" + key + "' of shard") << " '" << shard
                       << "': " << what << (why.empty() ? "" : " (" + why + ")")
                       << (held > 0 ? " [" + std::to_string(held) + " similar warnings held back]"
                                    : ""));
}

}  // namespace detail

std::int64_t BadDataCounters::bad_samples() const {
  return detail::sum(*this, true);
}

std::int64_t BadDataCounters::shard_errors() const {
  return detail::sum(*this, false);
}

double BadDataCounters::bad_fraction() const {
  const std::int64_t seen = samples + bad_samples();
  return seen == 0 ? 0.0 : static_cast<double>(bad_samples()) / static_cast<double>(seen);
}

nlohmann::json BadDataCounters::to_json() const {
  nlohmann::json j = {
      {"samples", samples}, {"repeated", repeated}, {"without_regions", without_regions}};
  for (const auto& row : detail::kTable) j[row.json] = this->*row.field;
  return j;
}

BadDataCounters BadDataCounters::from_json(const nlohmann::json& j) {
  BadDataCounters c;
  auto get = [&](const char* k, std::int64_t& v) {
    if (j.contains(k)) v = j.at(k).get<std::int64_t>();
  };
  get("samples", c.samples);
  get("repeated", c.repeated);
  get("without_regions", c.without_regions);
  for (const auto& row : detail::kTable) get(row.json, c.*row.field);
  return c;
}

}  // namespace clipper::data
