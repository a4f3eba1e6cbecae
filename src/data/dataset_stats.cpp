#include "clipper/data/dataset_stats.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <sstream>
#include <thread>

#include "clipper/core/error.hpp"
#include "clipper/core/progress.hpp"
#include "clipper/data/image.hpp"
#include "clipper/data/shard_list.hpp"
#include "clipper/data/tar_stream.hpp"
#include "counters.hpp"
#include "png_chunks.hpp"
#include "sample_fields.hpp"

namespace clipper::data {

void IntHistogram::add(std::int64_t v) {
  const auto cap = static_cast<std::int64_t>(counts_.size()) - 1;
  ++counts_[static_cast<std::size_t>(std::clamp<std::int64_t>(v, 0, cap))];
  ++n_;
}

void IntHistogram::merge(const IntHistogram& o) {
  for (std::size_t i = 0; i < counts_.size() && i < o.counts_.size(); ++i)
    counts_[i] += o.counts_[i];
  n_ += o.n_;
}

std::int64_t IntHistogram::percentile(double q) const {
  if (n_ == 0) return -1;
  const auto need =
      std::max<std::int64_t>(1, static_cast<std::int64_t>(q * static_cast<double>(n_) + 0.999999));
  std::int64_t acc = 0;
  for (std::size_t i = 0; i < counts_.size(); ++i)
    if ((acc += counts_[i]) >= need) return static_cast<std::int64_t>(i);
  return static_cast<std::int64_t>(counts_.size()) - 1;
}

std::int64_t IntHistogram::above(std::int64_t v) const {
  std::int64_t n = 0;
  for (std::size_t i = static_cast<std::size_t>(std::max<std::int64_t>(v + 1, 0));
       i < counts_.size(); ++i)
    n += counts_[i];
  return n;
}

nlohmann::json IntHistogram::summary() const {
  if (n_ == 0) return nullptr;
  return {{"min", percentile(0)},
          {"p5", percentile(0.05)},
          {"p50", percentile(0.5)},
          {"p95", percentile(0.95)},
          {"max", percentile(1.0)}};
}

namespace {

const char* format_of(const std::string& b) {
  auto at = [&](const char* m, std::size_t n, std::size_t off = 0) {
    return b.size() >= off + n && std::memcmp(b.data() + off, m, n) == 0;
  };
  if (at("\xFF\xD8\xFF", 3)) return "jpeg";
  if (at("\x89PNG", 4)) return "png";
  if (at("RIFF", 4) && at("WEBP", 4, 8)) return "webp";
  if (at("GIF8", 4)) return "gif";
  if (at("BM", 2)) return "bmp";
  if (at("II*\0", 4) || at("MM\0*", 4)) return "tiff";
  return "other";
}

class Collector {
 public:
  Collector(const DatasetStatsOptions& o, const tokenizer::Tokenizer& tok)
      : o_(o),
        tok_(tok),
        proc_(TransformSpec{}, o.max_image_pixels),
        ids_(static_cast<std::size_t>(tok.context_length())) {}

  void shard(const std::string& url, DatasetStats& t) {
    ShardReader r(url);
    RawSample s;
    while (r.next(s)) sample(s, t);
    if (r.status() != ShardStatus::ok) {
      const int kind = r.status() == ShardStatus::unreadable  ? detail::kShardUnreadable
                       : r.status() == ShardStatus::truncated ? detail::kShardTruncated
                                                              : detail::kPipeFailed;
      detail::add_counter(t.counters, kind);
      detail::warn_bad(kind, url, "", r.error());
    }
    ++t.shards;
  }

 private:
  void sample(const RawSample& s, DatasetStats& t) {
    const std::string* img = detail::find_image(s, o_.image_keys);
    std::string text;
    std::int64_t label = 0;
    if (!img) return detail::add_counter(t.counters, detail::kMissingImage);
    if (!detail::extract_text(s, o_.text_key, &text))
      return detail::add_counter(t.counters, detail::kMissingText);
    if (!o_.label_key.empty() && !detail::extract_label(s, o_.label_key, &label))
      return detail::add_counter(t.counters, detail::kMissingLabel);
    if (!image(*img, t)) return;
    ++t.counters.samples;
    std::int64_t chars = 0;
    for (unsigned char c : text) chars += (c & 0xC0) != 0x80;
    t.caption_chars.add(chars);
    tok_.encode(text, ids_.data());
    t.tokens.add(std::count_if(ids_.begin(), ids_.end(), [](std::int64_t v) { return v != 0; }));
  }

  // Counts the format and the size; false (counted) for a corrupt or too large image.
  bool image(const std::string& bytes, DatasetStats& t) {
    ++t.formats[format_of(bytes)];
    int w = 0, h = 0;
    std::string why = detail::png_damage(bytes);
    if (!why.empty()) return detail::add_counter(t.counters, detail::kImageCorrupt), false;
    if (o_.decode) {
      Image im;
      const auto err = detail::png_has_noisy_chunks(bytes)
                           ? proc_.decode(detail::png_without_noisy_chunks(bytes), &im, &why, true)
                           : proc_.decode(bytes, &im, &why, true);
      if (err != ImageError::none) {
        detail::add_counter(t.counters, err == ImageError::corrupt ? detail::kImageCorrupt
                                                                   : detail::kImageTooLarge);
        return false;
      }
      w = im.width;
      h = im.height;
    } else if (!peek_size(bytes, &w, &h)) {
      ++t.size_unknown;
      return true;
    }
    if (static_cast<std::int64_t>(w) * h > o_.max_image_pixels)
      return detail::add_counter(t.counters, detail::kImageTooLarge), false;
    t.width.add(w);
    t.height.add(h);
    return true;
  }

  const DatasetStatsOptions& o_;
  const tokenizer::Tokenizer& tok_;
  ImageProcessor proc_;
  std::vector<std::int64_t> ids_;
};

void merge(DatasetStats& into, const DatasetStats& t) {
  into.shards += t.shards;
  for (int k = 0; k < detail::kNumCounters; ++k) {
    const auto f = detail::counter_info(k).field;
    into.counters.*f += t.counters.*f;
  }
  into.counters.samples += t.counters.samples;
  for (const auto& [k, v] : t.formats) into.formats[k] += v;
  into.size_unknown += t.size_unknown;
  into.width.merge(t.width);
  into.height.merge(t.height);
  into.caption_chars.merge(t.caption_chars);
  into.tokens.merge(t.tokens);
}

}  // namespace

DatasetStats collect_dataset_stats(const std::string& shards, const DatasetStatsOptions& o,
                                   const tokenizer::Tokenizer& counting, const std::string& spec,
                                   std::int64_t context_length) {
  const ShardList list = parse_shard_list(shards);
  core::require(!list.shards.empty(), "data stats: the shard list '" + shards + "' is empty");
  const int threads = std::min<int>(
      static_cast<int>(list.shards.size()),
      o.threads > 0 ? o.threads
                    : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  std::vector<DatasetStats> per_shard(list.shards.size());
  std::atomic<std::size_t> next{0};
  std::atomic<std::int64_t> done_samples{0}, done_shards{0};
  std::mutex progress_mutex;
  core::Progress progress =
      o.progress_every_s < 0
          ? core::Progress("data stats", list.total_size(), "samples")
          : core::Progress("data stats", list.total_size(), "samples", o.progress_every_s);
  std::exception_ptr error;
  auto work = [&] {
    try {
      Collector c(o, counting);
      for (std::size_t i; (i = next++) < list.shards.size();) {
        c.shard(list.shards[i].url, per_shard[i]);
        done_samples += per_shard[i].counters.samples + per_shard[i].counters.bad_samples();
        ++done_shards;
        std::lock_guard<std::mutex> l(progress_mutex);
        progress.update(done_samples, std::to_string(done_shards) + " / " +
                                          std::to_string(list.shards.size()) + " shards");
      }
    } catch (...) {
      std::lock_guard<std::mutex> l(progress_mutex);
      if (!error) error = std::current_exception();
      next = list.shards.size();
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  DatasetStats all;
  all.tokenizer = spec;
  all.context_length = context_length;
  for (const auto& t : per_shard) merge(all, t);
  return all;
}

nlohmann::json DatasetStats::to_json() const {
  nlohmann::json j = counters.to_json();
  j.erase("repeated");
  j.erase("without_regions");  // (data stats does not read regions)
  j["shards"] = shards;
  j["bad_samples"] = counters.bad_samples();
  j["formats"] = formats;
  j["size_unknown"] = size_unknown;
  j["image_width"] = width.summary();
  j["image_height"] = height.summary();
  j["caption_chars"] = caption_chars.summary();
  j["caption_tokens"] = tokens.summary();
  j["tokenizer"] = tokenizer;
  j["context_length"] = context_length;
  j["captions_cut"] = captions_cut();
  return j;
}

std::string DatasetStats::to_text() const {
  std::ostringstream s;
  auto pct = [](const IntHistogram& h) {
    if (h.count() == 0) return std::string("-");
    return "min " + std::to_string(h.percentile(0)) + ", p5 " + std::to_string(h.percentile(0.05)) +
           ", median " + std::to_string(h.percentile(0.5)) + ", p95 " +
           std::to_string(h.percentile(0.95)) + ", max " + std::to_string(h.percentile(1.0));
  };
  s << "shards: " << shards << " (" << counters.shard_errors()
    << " unreadable, truncated or failed)\n";
  s << "samples: " << core::group_digits(counters.samples) << " good, "
    << core::group_digits(counters.bad_samples()) << " bad ("
    << detail::bad_sample_summary(counters) << ")\n";
  s << "image formats:";
  for (const auto& [k, v] : formats) s << " " << k << " " << core::group_digits(v);
  s << "\nimage width: " << pct(width) << "\nimage height: " << pct(height);
  if (size_unknown)
    s << "\n(" << size_unknown << " image sizes not in their header; --decode reads them)";
  s << "\ncaption characters: " << pct(caption_chars) << "\ncaption tokens (" << tokenizer
    << "): " << pct(tokens) << "\n";
  const std::int64_t n = tokens.count();
  char frac[32];
  std::snprintf(frac, sizeof frac, "%.2f",
                n ? 100.0 * static_cast<double>(captions_cut()) / static_cast<double>(n) : 0.0);
  s << core::group_digits(captions_cut()) << " caption(s) (" << frac
    << " %) longer than the context length " << context_length << " are cut\n";
  return s.str();
}

}  // namespace clipper::data
