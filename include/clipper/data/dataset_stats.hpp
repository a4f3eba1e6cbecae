#pragma once
// What a set of shards holds, read with the loader's own reader and sample rules (`clipper data
// stats`): samples, bad samples by the loader's kinds, image formats and sizes, caption lengths in
// characters and in tokens of a tokenizer (and how many captions its context length cuts).
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "clipper/data/loader.hpp"
#include "clipper/tokenizer/tokenizer.hpp"

namespace clipper::data {

struct DatasetStatsOptions {
  std::vector<std::string> image_keys{"jpg", "png", "jpeg", "webp"};
  std::string text_key = "txt";
  std::string label_key;  // set: a sample without an integer label is bad (missing_label)
  bool decode = false;    // decode every image (finds corrupt ones); else read the headers only
  std::int64_t max_image_pixels = 89478485;
  int threads = 0;               // shards read at once; 0: all cores
  double progress_every_s = -1;  // < 0: core::Progress's default
};

// Exact percentiles from counts of small non-negative integers (values above the cap are counted
// at the cap).
class IntHistogram {
 public:
  explicit IntHistogram(std::size_t cap = 1 << 16) : counts_(cap + 1, 0) {}
  void add(std::int64_t v);
  void merge(const IntHistogram& o);
  std::int64_t count() const { return n_; }
  // The smallest value with at least q of the counts at or below it; -1 when empty.
  std::int64_t percentile(double q) const;
  std::int64_t above(std::int64_t v) const;  // how many are larger than v
  nlohmann::json summary() const;            // {min, p5, p50, p95, max} or null

 private:
  std::vector<std::int64_t> counts_;
  std::int64_t n_ = 0;
};

struct DatasetStats {
  std::int64_t shards = 0;
  BadDataCounters counters;                     // samples = good ones; the loader's bad kinds
  std::map<std::string, std::int64_t> formats;  // jpeg, png, webp, bmp, gif, tiff, other
  std::int64_t size_unknown = 0;                // images whose size the header does not give
  IntHistogram width, height, caption_chars, tokens{4096};
  std::string tokenizer;  // its spec
  std::int64_t context_length = 0;

  std::int64_t captions_cut() const { return tokens.above(context_length); }
  nlohmann::json to_json() const;
  std::string to_text() const;  // the human-readable report
};

// `counting` encodes with a large context (e.g. 4096) so that token lengths are not cut;
// `context_length` is the model's, for the count of cut captions.
DatasetStats collect_dataset_stats(const std::string& shards, const DatasetStatsOptions& o,
                                   const tokenizer::Tokenizer& counting, const std::string& spec,
                                   std::int64_t context_length);

}  // namespace clipper::data
