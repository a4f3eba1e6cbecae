#include "shard_builder.hpp"

#include <atomic>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/core/progress.hpp"
#include "shard_stats.hpp"

namespace fs = std::filesystem;

namespace clipper::data::detail {

const char* to_string(InputFailure f) {
  switch (f) {
    case InputFailure::none:
      return "none";
    case InputFailure::unreadable:
      return "unreadable";
    case InputFailure::missing_caption:
      return "missing_caption";
    case InputFailure::corrupt_image:
      return "corrupt_image";
    case InputFailure::too_large:
      return "too_large";
    case InputFailure::unsupported_format:
      return "unsupported_format";
    case InputFailure::bad_row:
      return "bad_row";
  }
  return "?";
}

namespace {

bool starts_with(const std::string& b, const char* magic, std::size_t n, std::size_t at = 0) {
  return b.size() >= at + n && std::memcmp(b.data() + at, magic, n) == 0;
}

// JPEG, PNG, WebP, BMP, GIF, TIFF: the formats with a decoder here.
bool known_image_signature(const std::string& b) {
  return starts_with(b, "\xFF\xD8\xFF", 3) || starts_with(b, "\x89PNG", 4) ||
         (starts_with(b, "RIFF", 4) && starts_with(b, "WEBP", 4, 8)) || starts_with(b, "BM", 2) ||
         starts_with(b, "GIF8", 4) || starts_with(b, "II*\0", 4) || starts_with(b, "MM\0*", 4);
}

std::string first_bytes_hex(const std::string& b) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (std::size_t i = 0; i < b.size() && i < 8; ++i) {
    if (i) s += ' ';
    s += digits[static_cast<unsigned char>(b[i]) >> 4];
    s += digits[static_cast<unsigned char>(b[i]) & 15];
  }
  return s.empty() ? "none: the file is empty" : s;
}

}  // namespace

InputFailure prepare_image_bytes(const std::string& bytes, const ShardWriterOptions& o,
                                 ImageProcessor& proc, std::string* out, int* width, int* height,
                                 std::string* why) {
  if (!known_image_signature(bytes)) {
    *why = "not a JPEG, PNG, WebP, BMP, GIF or TIFF file (first bytes: " + first_bytes_hex(bytes) +
           ")";
    return InputFailure::unsupported_format;
  }
  const bool jpeg = starts_with(bytes, "\xFF\xD8", 2);
  if (o.resize <= 0 && jpeg && peek_size(bytes, width, height)) {
    if (static_cast<std::int64_t>(*width) * *height > o.max_image_pixels) {
      *why = std::to_string(*width) + "x" + std::to_string(*height) + " pixels exceed " +
             std::to_string(o.max_image_pixels);
      return InputFailure::too_large;
    }
    *out = bytes;
    return InputFailure::none;
  }
  Image img;
  why->clear();
  // The processor refuses a damaged PNG and quiets a noisy one before libpng sees it.
  const ImageError err = proc.decode(bytes, &img, why, /*keep_grey=*/true);
  if (err != ImageError::none) {
    if (why->empty()) *why = "the decoder gave no reason";
    return err == ImageError::too_large ? InputFailure::too_large : InputFailure::corrupt_image;
  }
  *width = img.width;
  *height = img.height;
  *out = encode_jpeg(resizes(o, img.width, img.height) ? resize_shorter_side(img, o.resize) : img,
                     o.quality);
  return InputFailure::none;
}

namespace {

std::string hex64(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

void fnv(std::uint64_t& h, const std::string& s) {
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  h = (h ^ 0xFF) * 1099511628211ULL;  // a separator no UTF-8 text holds
}

// The fingerprint of inputs [first, end) under the run's options: equal only for the same work.
std::string fingerprint(const InputSet& in, const ShardWriterOptions& o, std::int64_t first,
                        std::int64_t end) {
  std::uint64_t h = 1469598103934665603ULL;
  fnv(h, in.options_id);
  fnv(h, std::to_string(o.samples_per_shard) + "/" + std::to_string(o.resize) + "/" +
             std::to_string(o.quality) + "/" + std::to_string(o.max_image_pixels) + "/" +
             transparency_name(o.transparency));
  for (std::int64_t i = first; i < end; ++i) fnv(h, in.identity(i));
  return hex64(h);
}

std::string stats_path(const ShardWriterOptions& o, const std::string& shard_name) {
  return (fs::path(o.out_dir) / (shard_name.substr(0, shard_name.size() - 4) + "_stats.json"))
      .string();
}

std::int64_t file_bytes(const std::string& path) {
  std::error_code ec;
  const auto n = fs::file_size(path, ec);
  return ec ? -1 : static_cast<std::int64_t>(n);
}

std::optional<nlohmann::json> read_json(const std::string& path) {
  std::ifstream f(path);
  if (!f) return std::nullopt;
  auto j = nlohmann::json::parse(f, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return j;
}

struct Kept {
  std::vector<nlohmann::json> stats;
  std::vector<std::pair<std::string, std::int64_t>> sizes;
  std::int64_t next_input = 0;
};

// Whether shard `name`, with stats `j`, is complete work of this run starting at input `first`.
bool is_complete(const InputSet& in, const ShardWriterOptions& o, const std::string& name,
                 const nlohmann::json& j, std::int64_t first) {
  try {
    const auto& inputs = j.at("inputs");
    const auto a = inputs.at("first").get<std::int64_t>(), b = inputs.at("end").get<std::int64_t>();
    const auto n = j.at("samples").get<std::int64_t>();
    return a == first && b > a && b <= in.size && n >= 1 && n <= o.samples_per_shard &&
           (n == o.samples_per_shard || b == in.size) &&
           file_bytes((fs::path(o.out_dir) / name).string()) == j.at("bytes").get<std::int64_t>() &&
           inputs.at("fingerprint").get<std::string>() == fingerprint(in, o, a, b);
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

// The complete shards an earlier run of the same work left, in order from the first.
Kept find_complete(const InputSet& in, const ShardWriterOptions& o, const ShardWriter& w) {
  Kept k;
  for (std::int64_t i = 0;; ++i) {
    const std::string name = w.shard_name(i);
    const auto j = read_json(stats_path(o, name));
    if (!j || !is_complete(in, o, name, *j, k.next_input)) break;
    k.stats.push_back(*j);
    k.sizes.emplace_back(name, j->at("samples").get<std::int64_t>());
    k.next_input = j->at("inputs").at("end").get<std::int64_t>();
    if (k.next_input == in.size) break;
  }
  return k;
}

// Shards from `first` on (and their stats and temporary files) are rewritten: removed now so that
// a stale one never passes for a new one.
void remove_from(const ShardWriterOptions& o, const ShardWriter& w, std::int64_t first) {
  for (std::int64_t i = first;; ++i) {
    const std::string p = (fs::path(o.out_dir) / w.shard_name(i)).string();
    std::error_code ec;
    const bool any = fs::remove(p, ec) | fs::remove(stats_path(o, w.shard_name(i)), ec) |
                     fs::remove(p + ".tmp", ec);
    if (!any && i > first + 1) break;
  }
}

// Prepares inputs [begin, end) on `procs.size()` threads; the results are in input order.
std::vector<Prepared> prepare_block(const InputSet& in, std::int64_t begin, std::int64_t end,
                                    std::vector<std::unique_ptr<ImageProcessor>>& procs) {
  std::vector<Prepared> out(static_cast<std::size_t>(end - begin));
  std::atomic<std::int64_t> next{begin};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&](ImageProcessor& proc) {
    try {
      for (std::int64_t i; (i = next++) < end;)
        out[static_cast<std::size_t>(i - begin)] = in.prepare(i, proc);
    } catch (...) {
      std::lock_guard<std::mutex> l(error_mutex);
      if (!error) error = std::current_exception();
      next = end;
    }
  };
  if (procs.size() == 1) {
    work(*procs[0]);
  } else {
    std::vector<std::thread> threads;
    try {
      for (auto& p : procs) threads.emplace_back(work, std::ref(*p));
    } catch (const std::exception& e) {
      next = end;
      for (auto& t : threads) t.join();
      throw core::Error(std::string("shards: cannot start a worker thread: ") + e.what());
    }
    for (auto& t : threads) t.join();
  }
  if (error) std::rethrow_exception(error);
  return out;
}

// Writes prepared samples in order, closing each shard with its stats once it is full.
class Assembler {
 public:
  Assembler(const InputSet& in, const ShardWriterOptions& o, ShardWriter& w, RunStats& run,
            std::int64_t first)
      : in_(in), o_(o), w_(w), run_(run), first_(first) {}

  void add(Prepared& p, std::int64_t index) {
    if (p.failure != InputFailure::none) {
      warn(p);
      current_.add_failure(to_string(p.failure));
      ++failed_;
      return;
    }
    if (w_.in_current() >= o_.samples_per_shard) close(index);
    const std::int64_t number = run_.samples() + w_.in_current();
    w_.write(p.key.empty() ? sample_key(number, o_.clip_benchmark_names) : p.key, p.files);
    current_.add_sample(p.width, p.height, p.caption_chars);
  }

  // Closes the open shard (inputs up to `end`) and writes its stats after the shard is durable.
  void close(std::int64_t end) {
    const std::string name = w_.end_shard();
    if (name.empty()) return;
    auto j = current_.to_json();
    j["shard"] = name;
    j["bytes"] = file_bytes((fs::path(o_.out_dir) / name).string());
    j["inputs"] = {
        {"first", first_}, {"end", end}, {"fingerprint", fingerprint(in_, o_, first_, end)}};
    core::write_file_atomic(stats_path(o_, name), j.dump(2) + "\n");
    run_.add_shard(j);
    current_ = ShardStats();
    failed_ = 0;
    first_ = end;
  }

  // Skipped inputs so far, those of kept shards included.
  std::int64_t failed() const { return run_.failed_total() + failed_; }

  // 000000012, or CLIP_benchmark's s0000012.
  static std::string sample_key(std::int64_t i, bool clip_benchmark) {
    std::string s = std::to_string(i);
    const std::size_t width = clip_benchmark ? 7 : 9;
    if (s.size() < width) s.insert(0, width - s.size(), '0');
    return clip_benchmark ? "s" + s : s;
  }

 private:
  void warn(const Prepared& p) {
    static core::log::RateLimiter limiter(std::chrono::seconds(10));
    long long held = 0;
    if (!limiter.allow(to_string(p.failure), &held)) return;
    CLIPPER_WARN("shards: skipped "
                 << p.message << " [" << to_string(p.failure) << "]"
                 << (held > 0 ? "; " + std::to_string(held) + " similar warnings held back" : ""));
  }

  const InputSet& in_;
  const ShardWriterOptions& o_;
  ShardWriter& w_;
  RunStats& run_;
  std::int64_t first_, failed_ = 0;  // failed_: in the open shard
  ShardStats current_;
};

// stats.json beside sizes.json: one entry per prefix, merged like sizes.json.
void write_run_stats(const ShardWriterOptions& o, const nlohmann::json& j) {
  const std::string path = (fs::path(o.out_dir) / "stats.json").string();
  nlohmann::json all = read_json(path).value_or(nlohmann::json::object());
  all[o.prefix] = j;
  core::write_file_atomic(path, all.dump(2) + "\n");
}

}  // namespace

ShardsReport build_shards(const InputSet& in, const ShardWriterOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const int threads = o.threads > 0
                          ? o.threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  ShardWriter writer(o);
  Kept kept;
  if (o.resume) kept = find_complete(in, o, writer);
  remove_from(o, writer, static_cast<std::int64_t>(kept.sizes.size()));
  writer.resume_after(kept.sizes);
  RunStats run;
  for (const auto& j : kept.stats) run.add_shard(j);
  if (!kept.sizes.empty())
    CLIPPER_INFO("shards: kept " << kept.sizes.size() << " complete shard(s) of an earlier run ("
                                 << run.samples() << " samples, inputs up to " << kept.next_input
                                 << " of " << in.size << ")");
  std::vector<std::unique_ptr<ImageProcessor>> procs;
  TransformSpec ts;
  ts.transparency = o.transparency;
  for (int t = 0; t < threads; ++t)
    procs.push_back(std::make_unique<ImageProcessor>(ts, o.max_image_pixels));
  Assembler out(in, o, writer, run, kept.next_input);
  core::Progress progress("shards", in.size, "inputs", o.progress_every_s);
  progress.set_skipped(kept.next_input);
  const std::int64_t block = 32 * static_cast<std::int64_t>(threads);
  for (std::int64_t b = kept.next_input; b < in.size; b += block) {
    const std::int64_t e = std::min(in.size, b + block);
    auto results = prepare_block(in, b, e, procs);
    for (std::int64_t i = b; i < e; ++i) out.add(results[static_cast<std::size_t>(i - b)], i);
    if (progress.due())
      progress.update(e, std::to_string(run.shards()) + " shards done, " +
                             std::to_string(out.failed()) + " bad");
  }
  out.close(in.size);
  core::require(run.samples() > 0, "shards: no usable input in " + in.what);
  ShardsReport r = writer.finish();
  r.failed = run.failed();
  r.skipped = run.failed_total();
  r.inputs = in.size;
  r.kept_shards = static_cast<std::int64_t>(kept.sizes.size());
  r.threads = threads;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto j = run.to_json();
  j["inputs"] = in.size;
  j["pattern"] = r.pattern;
  j["kept_shards"] = r.kept_shards;
  j["threads"] = threads;
  j["seconds"] = r.seconds;
  j["inputs_per_second"] =
      r.seconds > 0 ? static_cast<double>(in.size - kept.next_input) / r.seconds : 0.0;
  write_run_stats(o, j);
  return r;
}

}  // namespace clipper::data::detail
