#include "worker.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/core/text.hpp"
#include "clipper/data/image.hpp"
#include "clipper/data/tar_stream.hpp"
#include "rng.hpp"

namespace clipper::data {

double BadDataCounters::bad_fraction() const {
  const std::int64_t seen = samples + bad_samples();
  return seen == 0 ? 0.0 : static_cast<double>(bad_samples()) / static_cast<double>(seen);
}

nlohmann::json BadDataCounters::to_json() const {
  return {{"samples", samples},
          {"image_corrupt", image_corrupt},
          {"image_too_large", image_too_large},
          {"missing_image", missing_image},
          {"missing_text", missing_text},
          {"shard_unreadable", shard_unreadable},
          {"shard_truncated", shard_truncated},
          {"pipe_failed", pipe_failed},
          {"repeated", repeated}};
}

BadDataCounters BadDataCounters::from_json(const nlohmann::json& j) {
  BadDataCounters c;
  auto get = [&](const char* k, std::int64_t& v) {
    if (j.contains(k)) v = j.at(k).get<std::int64_t>();
  };
  get("samples", c.samples);
  get("image_corrupt", c.image_corrupt);
  get("image_too_large", c.image_too_large);
  get("missing_image", c.missing_image);
  get("missing_text", c.missing_text);
  get("shard_unreadable", c.shard_unreadable);
  get("shard_truncated", c.shard_truncated);
  get("pipe_failed", c.pipe_failed);
  get("repeated", c.repeated);
  return c;
}

LoaderOptions LoaderOptions::from_config(const config::DataConfig& d, std::int64_t batch_size,
                                         int image_size, int rank, int world_size,
                                         std::uint64_t seed) {
  LoaderOptions o;
  o.shards = d.train_shards;
  o.source_weights = d.source_weights;
  o.num_samples = d.train_num_samples;
  o.image_keys.clear();
  for (const auto& k : core::split(d.image_keys, ';')) {
    const auto t = core::trim(k);
    if (!t.empty()) o.image_keys.push_back(t);
  }
  core::require(!o.image_keys.empty(),
                "data.image_keys is empty; expected e.g. 'jpg;png;jpeg;webp'");
  o.text_key = d.text_key;
  o.workers = static_cast<int>(d.workers);
  o.resampled = d.resampled;
  o.shard_shuffle_buffer = d.shard_shuffle_buffer;
  o.sample_shuffle_buffer = d.sample_shuffle_buffer;
  o.sample_shuffle_initial = d.sample_shuffle_initial;
  o.max_bad_fraction = d.max_bad_fraction;
  o.max_image_pixels = d.max_image_pixels;
  o.batch_size = batch_size;
  o.image_size = image_size;
  o.rank = rank;
  o.world_size = world_size;
  o.seed = seed;
  return o;
}

namespace detail {

void add_counter(BadDataCounters& c, int kind) {
  switch (kind) {
    case kImageCorrupt:
      ++c.image_corrupt;
      break;
    case kImageTooLarge:
      ++c.image_too_large;
      break;
    case kMissingImage:
      ++c.missing_image;
      break;
    case kMissingText:
      ++c.missing_text;
      break;
    case kShardUnreadable:
      ++c.shard_unreadable;
      break;
    case kShardTruncated:
      ++c.shard_truncated;
      break;
    case kPipeFailed:
      ++c.pipe_failed;
      break;
    default:
      break;
  }
}

namespace {

const char* counter_name(int kind) {
  static const char* names[] = {"corrupt image",    "image too large", "no image",   "no text",
                                "unreadable shard", "truncated shard", "pipe failed"};
  return kind >= 0 && kind < kNumCounters ? names[kind] : "?";
}

core::log::RateLimiter& warn_limiter() {
  static core::log::RateLimiter limiter(std::chrono::seconds(10));
  return limiter;
}

void warn_bad(int kind, const std::string& shard, const std::string& key, const std::string& why) {
  long long held = 0;
  if (!warn_limiter().allow(counter_name(kind), &held)) return;
  CLIPPER_WARN(
      "data: skipped " << (key.empty() ? "shard" : "sample '" + key + "' of shard") << " '" << shard
                       << "': " << counter_name(kind) << (why.empty() ? "" : " (" + why + ")")
                       << (held > 0 ? " [" + std::to_string(held) + " similar warnings held back]"
                                    : ""));
}

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

std::int64_t quota_of(std::int64_t T, int K, int w) {
  return T / K + (w < T % K ? 1 : 0);
}

}  // namespace

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
  std::int64_t T = o.drop_last ? (N / (W * B)) * B : (N + W - 1) / W;
  core::require(T > 0, "data: " + std::to_string(N) + " samples are too few for " +
                           std::to_string(W) + " rank(s) x batch " + std::to_string(B) +
                           (o.drop_last ? " with drop_last" : ""));
  return T;
}

EpochPlan plan_epoch(const ShardList& list, const LoaderOptions& o, std::int64_t epoch) {
  const int W = o.world_size, K = o.workers, r = o.rank;
  core::require(W >= 1 && r >= 0 && r < W,
                "data: rank " + std::to_string(r) + " outside world size " + std::to_string(W));
  core::require(K >= 1, "data.workers must be at least 1");
  core::require(!list.shards.empty(), "data: the shard list '" + o.shards + "' is empty");
  EpochPlan plan;
  plan.rank_samples = rank_samples(list, o);
  const std::int64_t T = plan.rank_samples;
  plan.workers.resize(K);
  for (int w = 0; w < K; ++w) {
    auto& wp = plan.workers[w];
    wp.quota = quota_of(T, K, w);
    wp.stream_seed = mix_seed(o.seed, 0x5354524541ULL, epoch, r, W, w, K);
    wp.crop_seed = mix_seed(o.seed, 0x43524f50ULL, epoch, r, W, w, K);
  }
  if (o.resampled) return plan;

  std::vector<int> order(list.shards.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  if (o.train && o.shard_shuffle_buffer > 0) {
    Rng rng(mix_seed(o.seed, 0x5348415244ULL, epoch));
    order = buffered_shuffle(order, static_cast<std::size_t>(o.shard_shuffle_buffer), rng);
  }
  if (list.sizes_known()) {
    // Samples of the shuffled shard order laid end to end; rank r owns a contiguous range, split
    // among its workers in proportion to their quotas.
    const std::int64_t total = list.total_size();
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
                                 std::to_string(W) + " rank(s) x " + std::to_string(K) +
                                 " workers");
      std::int64_t pos = 0;
      for (int idx : order) {
        const std::int64_t sz = list.shards[idx].size;
        const std::int64_t s0 = std::max(a, pos), s1 = std::min(b, pos + sz);
        if (s1 > s0) plan.workers[w].segments.push_back(Segment{idx, s0 - pos, s1 - pos});
        pos += sz;
        if (pos >= b) break;
      }
    }
  } else {
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
  return plan;
}

namespace {

// The worker's raw sample stream: its segments again and again (split) or endless weighted
// shard draws (resampled). Reports shard problems through `on_event`.
class Source {
 public:
  enum Result { sample, pass_end, failed };

  Source(const WorkerArgs& a,
         std::function<void(int, const std::string&, const std::string&)> on_event)
      : a_(a), on_event_(std::move(on_event)), draw_rng_(mix_seed(a.plan.stream_seed, 1)) {
    const auto& list = *a_.list;
    by_source_.resize(list.source_weights.size());
    for (std::size_t i = 0; i < list.shards.size(); ++i)
      by_source_[list.shards[i].source].push_back(static_cast<int>(i));
  }

  Result next(RawSample& out, int* shard, bool* repeated) {
    while (true) {
      if (!reader_) {
        if (!open_next()) return failed_ ? failed : pass_end;
      }
      if (reader_->next(out)) {
        const std::int64_t p = pos_++;
        if (p < seg_.begin) continue;
        if (seg_.end >= 0 && p >= seg_.end) {
          reader_.reset();
          continue;
        }
        ++pass_count_;
        empty_draws_ = 0;
        *shard = seg_.shard;
        *repeated = pass_ > 0;
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
  const std::string& failure() const { return failure_; }
  // The most samples one full pass over the worker's part yielded so far (split mode).
  std::int64_t largest_pass() const { return largest_pass_; }

 private:
  // Opens the next segment; false at the end of a pass (split) or on a failure.
  bool open_next() {
    const auto& list = *a_.list;
    if (a_.options->resampled) {
      if (++empty_draws_ > 200) {
        failed_ = true;
        failure_ = "no sample could be read from 200 shards drawn in a row from '" +
                   a_.options->shards + "'";
        return false;
      }
      const double u = draw_rng_.uniform();
      double acc = 0;
      std::size_t src = 0;
      for (; src + 1 < list.source_weights.size(); ++src) {
        acc += list.source_weights[src];
        if (u < acc) break;
      }
      const auto& shards = by_source_[src];
      seg_ = Segment{shards[draw_rng_.below(shards.size())], 0, -1};
    } else {
      const auto& segs = a_.plan.segments;
      if (segs.empty()) {
        failed_ = true;
        failure_ = "this worker was given no shards";
        return false;
      }
      if (next_seg_ == segs.size()) {
        next_seg_ = 0;
        const bool empty = pass_count_ == 0;
        largest_pass_ = std::max(largest_pass_, pass_count_);
        ++pass_;
        pass_count_ = 0;
        if (empty) {
          failed_ = true;
          std::string names;
          for (std::size_t i = 0; i < segs.size() && i < 5; ++i)
            names += (i ? ", " : "") + list.shards[segs[i].shard].url;
          failure_ = "no sample could be read from the worker's shards (" + names +
                     (segs.size() > 5 ? ", ..." : "") + ")";
        }
        return false;
      }
      seg_ = segs[next_seg_++];
    }
    reader_ = std::make_unique<ShardReader>(list.shards[seg_.shard].url);
    pos_ = 0;
    return true;
  }

  const WorkerArgs& a_;
  std::function<void(int, const std::string&, const std::string&)> on_event_;
  Rng draw_rng_;
  std::vector<std::vector<int>> by_source_;
  std::unique_ptr<ShardReader> reader_;
  Segment seg_;
  std::size_t next_seg_ = 0;
  std::int64_t pos_ = 0, pass_ = 0, pass_count_ = 0, empty_draws_ = 0, largest_pass_ = 0;
  bool failed_ = false;
  std::string failure_;
};

struct Pulled {
  RawSample sample;
  int shard = 0;
  bool repeated = false;
};

// The class index of a sample: an entry (e.g. "cls") holding a decimal integer.
bool extract_label(const RawSample& s, const std::string& key, std::int64_t* label) {
  const std::string* t = s.find(key);
  if (!t) return false;
  const std::string v = core::trim(*t);
  if (v.empty()) return false;
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (end != v.c_str() + v.size()) return false;
  *label = x;
  return true;
}

bool extract_text(const RawSample& s, const std::string& text_key, std::string* text) {
  if (text_key.rfind("json:", 0) == 0) {
    const std::string* js = s.find("json");
    if (!js) return false;
    const auto j = nlohmann::json::parse(*js, nullptr, false);
    if (j.is_discarded()) return false;
    const nlohmann::json* cur = &j;
    for (const auto& part : core::split(text_key.substr(5), '.')) {
      if (!cur->is_object() || !cur->contains(part)) return false;
      cur = &(*cur)[part];
    }
    if (!cur->is_string()) return false;
    *text = cur->get<std::string>();
    return true;
  }
  const std::string* t = s.find(text_key);
  if (!t) return false;
  *text = *t;
  return true;
}

}  // namespace

void run_worker(WorkerArgs a) {
  const auto& o = *a.options;
  const auto& list = *a.list;
  auto push = [&](Item&& it) { return a.out->push(std::move(it)); };
  try {
    std::int64_t out_index = 0;
    auto on_event = [&](int kind, const std::string& url, const std::string& why) {
      if (out_index < a.skip_raw) return;  // counted before the restore
      warn_bad(kind, url, "", why);
      Item it;
      it.kind = Item::event;
      it.counter = kind;
      it.raw_index = out_index;
      push(std::move(it));
    };
    Source source(a, on_event);
    Rng shuffle_rng(mix_seed(a.plan.stream_seed, 2));
    const std::size_t bufsize =
        o.train ? static_cast<std::size_t>(std::max<std::int64_t>(o.sample_shuffle_buffer, 1)) : 1;
    const std::size_t initial = std::min(
        bufsize, static_cast<std::size_t>(std::max<std::int64_t>(o.sample_shuffle_initial, 1)));
    std::vector<Pulled> buf;
    bool draining = false, failed = false;
    auto pull = [&]() {
      Pulled p;
      const auto r = source.next(p.sample, &p.shard, &p.repeated);
      if (r == Source::sample)
        buf.push_back(std::move(p));
      else if (r == Source::pass_end)
        draining = true;
      else
        failed = draining = true;
    };
    // WebDataset's shuffle: fill to `initial`, then each output is preceded by up to two pulls
    // while the buffer is below its size. A pass over the worker's part drains fully before the
    // next pass starts, so a repeat never overtakes a sample not yet delivered.
    auto next_output = [&](Pulled* out) -> bool {
      while (true) {
        if (!draining) {
          if (buf.size() < initial) {
            pull();
            continue;
          }
          pull();
          if (!draining && buf.size() < bufsize) pull();
        }
        if (buf.empty()) {
          if (failed) return false;
          draining = false;  // next pass
          continue;
        }
        const std::size_t i = bufsize > 1 ? shuffle_rng.below(buf.size()) : 0;
        if (bufsize > 1) {
          std::swap(buf[i], buf.back());
          *out = std::move(buf.back());
          buf.pop_back();
        } else {
          *out = std::move(buf.front());
          buf.erase(buf.begin());
        }
        return true;
      }
    };

    ImageProcessor proc(TransformSpec{o.image_size, o.train}, o.max_image_pixels);
    const std::int64_t L = a.tokenizer->context_length();
    std::int64_t quota = a.quota_remaining, bad_in_row = 0;
    std::string text, why;
    Pulled p;
    while (quota > 0 && !a.stop->load(std::memory_order_relaxed)) {
      if (!next_output(&p)) {
        Item it;
        it.kind = Item::fatal;
        it.message = "data: " + source.failure();
        push(std::move(it));
        return;
      }
      const std::int64_t k = out_index++;
      if (k < a.skip_raw) continue;
      Item it;
      it.raw_index = k;
      it.repeated = p.repeated;
      it.key = std::move(p.sample.key);
      const std::string* img = nullptr;
      for (const auto& ext : o.image_keys)
        if ((img = p.sample.find(ext))) break;
      why.clear();
      int bad = -1;
      if (!img) {
        bad = kMissingImage;
      } else if (!extract_text(p.sample, o.text_key, &text)) {
        bad = kMissingText;
      } else if (!o.label_key.empty() && !extract_label(p.sample, o.label_key, &it.label)) {
        bad = kMissingText;
        why = "no integer '" + o.label_key + "' entry";
      } else {
        it.image = a.pool->get();
        const auto err = proc.process(
            *img, mix_seed(a.plan.crop_seed, static_cast<std::uint64_t>(k)), it.image.get(), &why);
        if (err == ImageError::corrupt)
          bad = kImageCorrupt;
        else if (err == ImageError::too_large)
          bad = kImageTooLarge;
      }
      if (bad >= 0) {
        warn_bad(bad, list.shards[p.shard].url, it.key, why);
        it.kind = Item::bad;
        it.counter = bad;
        a.pool->put(std::move(it.image));
        if (!push(std::move(it))) return;
        // Two full passes without one good sample (split), or 100000 in a row (resampled).
        const std::int64_t limit =
            o.resampled || source.largest_pass() == 0
                ? 100000
                : 2 * source.largest_pass() + static_cast<std::int64_t>(bufsize);
        if (++bad_in_row > limit) {
          Item f;
          f.kind = Item::fatal;
          f.message = "data: " + std::to_string(bad_in_row) +
                      " bad samples in a row and no good one in '" + o.shards + "'";
          push(std::move(f));
          return;
        }
        continue;
      }
      bad_in_row = 0;
      it.tokens.resize(static_cast<std::size_t>(L));
      a.tokenizer->encode(text, it.tokens.data());
      it.kind = Item::good;
      if (!push(std::move(it))) return;
      --quota;
    }
  } catch (const std::exception& e) {
    Item f;
    f.kind = Item::fatal;
    f.message = std::string("data worker: ") + e.what();
    push(std::move(f));
  }
}

}  // namespace detail
}  // namespace clipper::data
