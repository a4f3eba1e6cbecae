#include "worker.hpp"

#include <algorithm>
#include <atomic>
#include <map>

#include "clipper/data/image.hpp"
#include "clipper/data/tar_stream.hpp"
#include "counters.hpp"
#include "rng.hpp"
#include "sample_fields.hpp"
#include "shuffle_buffer.hpp"
#include "source.hpp"

namespace clipper::data::detail {
namespace {

std::atomic<std::int64_t> g_images_processed{0};

TransformSpec transform_spec(const LoaderOptions& o) {
  TransformSpec t;
  t.size = o.image_size;
  t.train = o.train;
  t.transparency = o.transparency;
  t.resize_mode = o.resize_mode;
  t.interpolation = o.interpolation;
  t.naflex_patch = o.naflex_patch;
  t.naflex_max_tokens = o.naflex_max_tokens;
  return t;
}

// `regions` (fractions of the stored width x height picture) as the picture `spec` makes of it
// shows them: moved into the crop that ImageProcessor::process takes with `seed`
// (RandomResizedCrop's box in training, NaFlex's too; the evaluation transform's window).
std::vector<Region> regions_as_shown(const std::vector<Region>& regions, int width, int height,
                                     const TransformSpec& spec, std::uint64_t seed) {
  if (regions.empty()) return {};
  if (spec.train) {
    const CropBox b = random_resized_crop_box(width, height, spec, seed);
    return crop_regions(regions, width, height, b.x, b.y, b.w, b.h);
  }
  if (spec.naflex()) return regions;  // the whole picture, its aspect kept
  const int S = spec.size;
  const ResizeThenCrop g = eval_geometry(width, height, S, spec.resize_mode);
  if (std::max(g.resized_width, g.resized_height) > 16 * S) {  // eval_to_output's centre square
    const int side = std::min(width, height);
    return crop_regions(regions, width, height, (width - side) / 2, (height - side) / 2, side,
                        side);
  }
  return crop_regions(regions, g.resized_width, g.resized_height, g.left, g.top, S, S);
}

std::size_t shuffle_size(const LoaderOptions& o) {
  return o.train ? static_cast<std::size_t>(std::max<std::int64_t>(o.sample_shuffle_buffer, 1)) : 1;
}

// One worker thread: for each piece of its part, pulls the piece's raw stream through its shuffle
// buffer, skips what the piece does not own (raw samples undecoded, then `skip` good ones, each
// only checked: ImageProcessor::check), turns the rest into good or bad items and pushes them in
// order.
class Worker {
 public:
  explicit Worker(WorkerArgs a)
      : a_(std::move(a)),
        o_(*a_.options),
        proc_(transform_spec(o_), o_.max_image_pixels),
        position_(a_.first_position) {}

  void run() {
    for (std::size_t i = 0; i < a_.stretches.size(); ++i)
      if (!run_piece(a_.stretches[i], a_.first_piece + static_cast<int>(i))) return;
  }

  void fatal(std::string message) {
    Item f;
    f.kind = Item::fatal;
    f.message = std::move(message);
    push(std::move(f));
  }

 private:
  bool push(Item&& it) { return a_.out->push(std::move(it)); }
  void open(const Stretch& s) {
    plan_ = &s.plan;
    skip_raw_ = s.piece.raw;
    skip_good_ = s.piece.skip;
    out_index_ = bad_in_row_ = 0;
    source_ = std::make_unique<Source>(
        *a_.list, o_, s.plan, [this](int kind, const std::string& url, const std::string& why) {
          on_event(kind, url, why);
        });
    shuffle_ = std::make_unique<ShuffleBuffer<Pulled>>(
        shuffle_size(o_), static_cast<std::size_t>(o_.sample_shuffle_initial),
        mix_seed(s.plan.stream_seed, 2), static_cast<std::size_t>(o_.max_shuffle_buffer_bytes));
  }

  // false: stopped or failed.
  bool run_piece(const Stretch& s, int piece) {
    if (s.piece.count <= 0) return true;
    open(s);
    std::int64_t quota = s.piece.count;
    Pulled p;
    while (quota > 0) {
      if (a_.stop->load(std::memory_order_relaxed)) return false;
      if (!next_pulled(&p)) {
        fatal("data: " + source_->failure());
        return false;
      }
      const std::int64_t k = out_index_++;
      if (k < skip_raw_) continue;
      if (skip_good_ > 0) {  // an earlier piece's sample: only whether it is good counts
        if (!skip_one(p)) return false;
        continue;
      }
      Item it = make_item(p, k);
      it.piece = piece;
      it.repeated = it.repeated || s.piece.repeated;
      if (it.kind == Item::bad) {
        a_.pool->put(std::move(it.image));
        const std::string& url = a_.list->shards[p.shard].url;
        warn_bad(it.counter, url, it.key, it.message);
        it.message = "sample '" + it.key + "' of shard '" + url +
                     "': " + counter_info(it.counter).message +
                     (it.message.empty() ? "" : " (" + it.message + ")");
        if (!push(std::move(it))) return false;
        if (!bad_limit_ok()) return false;
        continue;
      }
      bad_in_row_ = 0;
      if (!push(std::move(it))) return false;
      --quota;
      position_ += o_.workers;
    }
    return true;
  }

  // A sample before the piece's own, skipped: whether it is good, found without cropping,
  // resizing or tokenizing (ImageProcessor::check); bad ones were counted by the piece before.
  // false: stopped by the bad-sample limit.
  bool skip_one(Pulled& p) {
    const std::string* img = find_image(p.sample, o_.image_keys);
    std::int64_t label = -1;
    const bool good = img && extract_text(p.sample, o_.text_key, &text_) &&
                      (o_.label_key.empty() || extract_label(p.sample, o_.label_key, &label)) &&
                      regions_ok(p.sample, *img) && proc_.check(*img, nullptr) == ImageError::none;
    if (!good) return bad_limit_ok();
    bad_in_row_ = 0;
    --skip_good_;
    return true;
  }

  // What make_item finds of the sample's regions: valid, and placeable in its picture.
  bool regions_ok(const RawSample& sample, const std::string& img) {
    if (o_.regions_key.empty()) return true;
    int width = 0, height = 0;
    return extract_regions(sample, o_.regions_key, "", &regions_, nullptr) &&
           (regions_.empty() || peek_size(img, &width, &height));
  }

  void on_event(int kind, const std::string& url, const std::string& why) {
    if (out_index_ < skip_raw_ || skip_good_ > 0) return;  // counted before the restore
    warn_bad(kind, url, "", why);
    Item it;
    it.kind = Item::event;
    it.counter = kind;
    it.raw_index = out_index_;
    push(std::move(it));
  }

  bool next_pulled(Pulled* out) {
    auto pull = [this](Pulled& p) {
      switch (source_->next(p)) {
        case Source::sample:
          return ShuffleBuffer<Pulled>::item;
        case Source::pass_end:
          return ShuffleBuffer<Pulled>::pass_end;
        default:
          return ShuffleBuffer<Pulled>::failure;
      }
    };
    while (true) {
      shuffle_->fill(pull);
      if (shuffle_->next(out)) return true;
      if (shuffle_->failed()) return false;
    }
  }

  // A good item (decoded image, tokens) or a bad one with its counter and reason in `message`.
  Item make_item(Pulled& p, std::int64_t raw_index) {
    Item it;
    it.raw_index = raw_index;
    it.repeated = p.repeated;
    it.key = std::move(p.sample.key);
    const std::string* img = find_image(p.sample, o_.image_keys);
    it.kind = Item::bad;
    if (!img) {
      it.counter = kMissingImage;
    } else if (!extract_text(p.sample, o_.text_key, &text_)) {
      it.counter = kMissingText;
    } else if (!o_.label_key.empty() && !extract_label(p.sample, o_.label_key, &it.label)) {
      it.counter = kMissingLabel;
      it.message = "no integer '" + o_.label_key + "' entry";
    } else if (!o_.regions_key.empty() &&
               !extract_regions(p.sample, o_.regions_key, "'" + it.key + "'", &regions_,
                                &it.message)) {
      it.counter = kBadRegions;
    } else {
      // (A damaged PNG is refused and a noisy one quieted by the processor, before libpng.)
      it.image = a_.pool->get();
      g_images_processed.fetch_add(1, std::memory_order_relaxed);
      it.seq_len = a_.schedule ? a_.schedule->seq_len_at(position_) : 0;
      const std::uint64_t seed = mix_seed(plan_->crop_seed, static_cast<std::uint64_t>(raw_index));
      ImageProcessor& proc = processor(it.seq_len);
      const auto err = proc.process(*img, seed, it.image.get(), &it.message, &it.grid);
      if (err != ImageError::none) {
        it.counter = err == ImageError::corrupt ? kImageCorrupt : kImageTooLarge;
        return it;
      }
      int width = 0, height = 0;
      if (!regions_.empty() && !peek_size(*img, &width, &height)) {
        it.counter = kBadRegions;
        it.message = "the picture's size, needed to place its regions, is not in its header";
        return it;
      }
      it.regions = regions_as_shown(regions_, width, height, proc.spec(), seed);
      it.message.clear();
      it.kind = Item::good;
      it.tokens.resize(static_cast<std::size_t>(a_.tokenizer->context_length()));
      a_.tokenizer->encode(text_, it.tokens.data());
    }
    return it;
  }

  // The processor that cuts pictures into at most `seq_len` patches (0: the model's budget).
  ImageProcessor& processor(std::int64_t seq_len) {
    if (seq_len <= 0) return proc_;
    auto& p = budget_procs_[seq_len];
    if (!p) {
      TransformSpec t = transform_spec(o_);
      t.naflex_max_tokens = seq_len;
      p = std::make_unique<ImageProcessor>(t, o_.max_image_pixels);
    }
    return *p;
  }

  // Two full passes without one good sample (split), or 100000 in a row (resampled), end the run.
  bool bad_limit_ok() {
    const std::int64_t limit =
        o_.resampled || source_->largest_pass() == 0
            ? 100000
            : 2 * source_->largest_pass() + static_cast<std::int64_t>(shuffle_size(o_));
    if (++bad_in_row_ <= limit) return true;
    fatal("data: " + std::to_string(bad_in_row_) + " bad samples in a row and no good one in '" +
          o_.shards + "'");
    return false;
  }

  WorkerArgs a_;
  const LoaderOptions& o_;
  const WorkerPlan* plan_ = nullptr;
  std::int64_t out_index_ = 0, bad_in_row_ = 0, skip_raw_ = 0, skip_good_ = 0;
  std::unique_ptr<Source> source_;
  std::unique_ptr<ShuffleBuffer<Pulled>> shuffle_;
  ImageProcessor proc_;
  std::map<std::int64_t, std::unique_ptr<ImageProcessor>> budget_procs_;
  std::int64_t position_ = 0;  // the rank position of the next good sample (token budgets)
  std::string text_;
  std::vector<Region> regions_;  // the sample's regions as stored (regions_key set)
};

}  // namespace

void run_worker(WorkerArgs args) {
  BoundedQueue<Item>* out = args.out;
  try {
    Worker w(std::move(args));
    w.run();
  } catch (const std::exception& e) {
    Item f;
    f.kind = Item::fatal;
    f.message = std::string("data worker: ") + e.what();
    out->push(std::move(f));
  }
}

std::int64_t images_processed() {
  return g_images_processed.load(std::memory_order_relaxed);
}

namespace {
std::atomic<FaultHook> g_fault_hook{nullptr};
}  // namespace

void set_fault_hook(FaultHook hook) {
  g_fault_hook = hook;
}

void fault_point(const char* where) {
  if (const FaultHook h = g_fault_hook.load()) h(where);
}

}  // namespace clipper::data::detail
