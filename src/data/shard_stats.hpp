#pragma once
// Internal to the shard writer: what one shard holds (<shard>_stats.json) and the run's totals
// (stats.json), the latter summed from the former so that a resumed run reports the same totals.
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace clipper::data::detail {

class ShardStats {
 public:
  void add_sample(int width, int height, std::int64_t caption_chars);
  void add_failure(const std::string& reason) { ++failed_[reason]; }
  std::int64_t samples() const { return static_cast<std::int64_t>(widths_.size()); }
  // {"samples", "failed": {reason: n}, "image_width"/"image_height"/"caption_chars":
  //  {"min", "median", "max"}, "shorter_side_histogram": {"<64": n, "64-127": n, ...}}
  nlohmann::json to_json() const;

 private:
  std::vector<int> widths_, heights_;
  std::vector<std::int64_t> captions_;
  std::map<std::string, std::int64_t> failed_;
};

class RunStats {
 public:
  void add_shard(const nlohmann::json& shard);
  std::int64_t samples() const { return samples_; }
  std::int64_t shards() const { return shards_; }
  std::int64_t failed_total() const;
  const std::map<std::string, std::int64_t>& failed() const { return failed_; }
  // The totals: samples, shards, failed by reason, min/max image sizes and caption lengths, the
  // shorter-side histogram.
  nlohmann::json to_json() const;

 private:
  std::int64_t samples_ = 0, shards_ = 0;
  std::map<std::string, std::int64_t> failed_, histogram_;
  nlohmann::json min_, max_;
};

// The shorter-side bucket names, smallest first.
const std::vector<std::string>& shorter_side_buckets();

}  // namespace clipper::data::detail
