#include "shard_stats.hpp"

#include <algorithm>

namespace clipper::data::detail {
namespace {

constexpr int kBucketEdges[] = {64, 128, 256, 512, 1024, 2048};

std::string bucket_of(int side) {
  const auto& names = shorter_side_buckets();
  std::size_t i = 0;
  while (i < std::size(kBucketEdges) && side >= kBucketEdges[i]) ++i;
  return names[i];
}

template <class T>
nlohmann::json min_median_max(std::vector<T> v) {
  if (v.empty()) return nullptr;
  std::sort(v.begin(), v.end());
  return {{"min", v.front()}, {"median", v[v.size() / 2]}, {"max", v.back()}};
}

const char* const kSized[] = {"image_width", "image_height", "caption_chars"};

}  // namespace

const std::vector<std::string>& shorter_side_buckets() {
  static const std::vector<std::string> names = {"<64",      "64-127",    "128-255", "256-511",
                                                 "512-1023", "1024-2047", ">=2048"};
  return names;
}

void ShardStats::add_sample(int width, int height, std::int64_t caption_chars) {
  widths_.push_back(width);
  heights_.push_back(height);
  captions_.push_back(caption_chars);
}

nlohmann::json ShardStats::to_json() const {
  nlohmann::json hist = nlohmann::json::object();
  for (std::size_t i = 0; i < widths_.size(); ++i) {
    const std::string b = bucket_of(std::min(widths_[i], heights_[i]));
    hist[b] = hist.value(b, 0) + 1;
  }
  return {{"samples", samples()},
          {"failed", failed_},
          {"image_width", min_median_max(widths_)},
          {"image_height", min_median_max(heights_)},
          {"caption_chars", min_median_max(captions_)},
          {"shorter_side_histogram", hist}};
}

void RunStats::add_shard(const nlohmann::json& s) {
  ++shards_;
  samples_ += s.value("samples", std::int64_t{0});
  if (s.contains("failed"))
    for (const auto& [k, v] : s.at("failed").items()) failed_[k] += v.get<std::int64_t>();
  if (s.contains("shorter_side_histogram"))
    for (const auto& [k, v] : s.at("shorter_side_histogram").items())
      histogram_[k] += v.get<std::int64_t>();
  for (const char* key : kSized) {
    if (!s.contains(key) || !s.at(key).is_object()) continue;
    const auto lo = s.at(key).at("min").get<std::int64_t>();
    const auto hi = s.at(key).at("max").get<std::int64_t>();
    if (!min_.contains(key) || lo < min_[key].get<std::int64_t>()) min_[key] = lo;
    if (!max_.contains(key) || hi > max_[key].get<std::int64_t>()) max_[key] = hi;
  }
}

std::int64_t RunStats::failed_total() const {
  std::int64_t n = 0;
  for (const auto& [k, v] : failed_) n += v;
  return n;
}

nlohmann::json RunStats::to_json() const {
  nlohmann::json j = {{"samples", samples_},
                      {"shards", shards_},
                      {"failed", failed_},
                      {"failed_total", failed_total()},
                      {"shorter_side_histogram", histogram_}};
  for (const char* key : kSized)
    if (min_.contains(key)) j[key] = {{"min", min_[key]}, {"max", max_[key]}};
  return j;
}

}  // namespace clipper::data::detail
