#include "clipper/data/loader.hpp"

#include <ATen/Context.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include "budget.hpp"
#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/core/text.hpp"
#include "counters.hpp"
#include "loader_state.hpp"
#include "plan.hpp"
#include "worker.hpp"

namespace clipper::data {

using detail::BoundedQueue;
using detail::Cursor;
using detail::Item;
using detail::kStateVersion;
using detail::Layout;
using detail::Saved;

namespace {
struct Out {
  enum Kind { batch, end, error } kind = batch;
  Batch b;
  Cursor after;
  std::string message;
  bool input_error = true;  // bad data or settings; false: the loader itself failed
};

// How filling a batch ended.
enum class Fill { full, stopped, failed };

// The worker threads of one epoch, each with its queue. Stops and joins them when it goes, also
// when starting one of them failed.
class Workers {
 public:
  Workers(const ShardList& list, const LoaderOptions& o, const Cursor& c,
          std::shared_ptr<const tokenizer::Tokenizer> tok, detail::BufferPool* pool,
          std::shared_ptr<const detail::RankSchedule> schedule) {
    const int K = o.workers;
    const auto qcap = static_cast<std::size_t>(std::max<std::int64_t>(4, 2 * o.batch_size / K + 2));
    try {
      for (int w = 0; w < K; ++w) {
        queues_.push_back(std::make_unique<BoundedQueue<Item>>(qcap));
        detail::WorkerArgs a;
        a.list = &list;
        a.options = &o;
        for (const auto& p : detail::rest_of(c, w, o.rank, K))
          a.stretches.push_back({plan(list, o, c, p.rank).workers[p.worker], p});
        a.first_piece = c.pieces.empty() ? 0 : static_cast<int>(c.next_piece[w]);
        a.tokenizer = tok;
        // Sample j of the rank comes from worker j % K: this worker's next one is j = done*K + w.
        a.schedule = schedule;
        a.first_position = detail::worker_quota(c.pos, K, w) * K + w;
        a.out = queues_.back().get();
        a.stop = &stop_;
        a.pool = pool;
        detail::fault_point("worker thread");
        threads_.emplace_back(detail::run_worker, std::move(a));
      }
    } catch (const std::exception& e) {
      stop();
      throw core::Error("data loader: cannot start worker thread " +
                        std::to_string(threads_.size() + 1) + " of " + std::to_string(K) + ": " +
                        e.what());
    }
  }
  ~Workers() { stop(); }
  Workers(const Workers&) = delete;
  Workers& operator=(const Workers&) = delete;

  BoundedQueue<Item>& queue(int w) { return *queues_[static_cast<std::size_t>(w)]; }

 private:
  // The epoch plan of `rank`: this layout's, or in a re-split epoch that of the saved layout.
  const detail::EpochPlan& plan(const ShardList& list, const LoaderOptions& o, const Cursor& c,
                                int rank) {
    auto it = plans_.find(rank);
    if (it != plans_.end()) return it->second;
    if (c.pieces.empty()) return plans_[rank] = detail::plan_epoch(list, o, c.epoch);
    LoaderOptions b = o;
    b.rank = rank;
    b.world_size = c.base.world;
    b.workers = c.base.workers;
    return plans_[rank] = detail::plan_epoch(list, b, c.epoch, c.base.T);
  }

  void stop() {
    stop_ = true;
    for (auto& q : queues_) q->close();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  std::atomic<bool> stop_{false};
  std::vector<std::unique_ptr<BoundedQueue<Item>>> queues_;
  std::vector<std::thread> threads_;
  std::map<int, detail::EpochPlan> plans_;
};
}  // namespace

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
  o.regions_key = d.regions_key;
  o.workers = static_cast<int>(d.workers);
  o.resampled = d.resampled;
  o.shard_shuffle_buffer = d.shard_shuffle_buffer;
  o.sample_shuffle_buffer = d.sample_shuffle_buffer;
  o.sample_shuffle_initial = d.sample_shuffle_initial;
  o.max_bad_fraction = d.max_bad_fraction;
  o.max_image_pixels = d.max_image_pixels;
  o.max_sample_bytes = d.max_sample_bytes;
  o.max_shuffle_buffer_bytes = d.max_shuffle_buffer_bytes;
  o.transparency = parse_transparency(d.transparency, "data.transparency");
  o.naflex_seq_lens = d.naflex_seq_lens;
  o.naflex_max_tokens_per_batch = d.naflex_max_tokens_per_batch;
  if (o.naflex_max_tokens_per_batch == 0 && !o.naflex_seq_lens.empty())
    o.naflex_max_tokens_per_batch =  // timm's rule: batch_size pictures at the longest length
        batch_size * *std::max_element(o.naflex_seq_lens.begin(), o.naflex_seq_lens.end());
  o.batch_size = batch_size;
  o.image_size = image_size;
  o.rank = rank;
  o.world_size = world_size;
  o.seed = seed;
  return o;
}

namespace {
// data.regions_key names one member (an extension): not a json:FIELD path, not the image's.
void check_regions_key(const LoaderOptions& o) {
  const std::string& k = o.regions_key;
  if (k.empty()) return;
  const bool one_member = k.find_first_of(":;/ \t") == std::string::npos;
  core::require(one_member, "data.regions_key is '" + k +
                                "'; expected the extension of the member that holds {\"regions\": "
                                "[...]}, e.g. 'json' (docs/data.md \"Regions\")");
  core::require(std::find(o.image_keys.begin(), o.image_keys.end(), k) == o.image_keys.end(),
                "data.regions_key '" + k + "' is one of data.image_keys; expected the member " +
                    "that holds the regions' json, e.g. 'json'");
}
}  // namespace

struct Loader::Impl {
  LoaderOptions o;
  std::shared_ptr<const tokenizer::Tokenizer> tok;
  ShardList list;
  std::int64_t T = 0, dataset = 0;
  std::int64_t S = 0;  // token-budget batches: batches per epoch of this layout's own plan
  bool pin = false;
  Cursor returned;
  std::string failed;
  bool failed_input = true;

  std::thread collator;
  std::atomic<bool> stop{false};
  std::unique_ptr<BoundedQueue<Out>> out;
  bool running = false;
  std::unique_ptr<detail::BufferPool> pool;
  // Batch tensors handed out earlier and dropped by the caller since are reused (CPU memory only;
  // pinned memory has its own caching allocator).
  std::vector<at::Tensor> spare_images, spare_tokens;

  // Only this pool still holds t. The caller's last reads of a batch must happen before our
  // writes into its reused memory: use_count() reads the count relaxed, which orders nothing
  // (ThreadSanitizer reported the race), so the tensor's count is read with acquire ordering and
  // an acquire fence follows the storage's (a view the caller dropped held only the storage).
  static bool sole_owner(const at::Tensor& t) {
    if (!t.getIntrusivePtr().is_uniquely_owned() || t.storage().use_count() != 1) return false;
    std::atomic_thread_fence(std::memory_order_acquire);
    return true;
  }

  at::Tensor reuse_or_empty(std::vector<at::Tensor>& spares, at::IntArrayRef shape,
                            at::ScalarType type) {
    if (!pin)
      for (auto& t : spares)
        if (sole_owner(t) && t.sizes() == shape) return t;
    auto t = at::empty(shape, at::TensorOptions().dtype(type).pinned_memory(pin));
    if (!pin) {
      if (spares.size() >= 8) spares.erase(spares.begin());
      spares.push_back(t);
    }
    return t;
  }

  Cursor fresh(std::int64_t epoch, const BadDataCounters& counters) const {
    Cursor c;
    c.epoch = epoch;
    c.len = T;
    c.next_raw.assign(static_cast<std::size_t>(o.workers), 0);
    c.next_piece.assign(static_cast<std::size_t>(o.workers), 0);
    c.base = {o.world_size, o.workers, T, {}};
    c.counters = counters;
    return c;
  }

  void start() {
    stop = false;
    out = std::make_unique<BoundedQueue<Out>>(
        static_cast<std::size_t>(std::max(1, o.prefetch_batches)));
    try {
      detail::fault_point("collator thread");
      collator = std::thread([this, c = returned]() mutable { collate(std::move(c)); });
    } catch (const std::exception& e) {
      throw core::Error(std::string("data loader: cannot start the collator thread: ") + e.what());
    }
    running = true;
  }

  void shutdown() {
    if (!running) return;
    stop = true;
    out->close();
    collator.join();
    running = false;
  }

  bool too_bad(const BadDataCounters& c) const {
    const std::int64_t seen = c.samples + c.bad_samples();
    return seen >= o.bad_check_min_samples && c.bad_fraction() > o.max_bad_fraction;
  }

  void check_same_data(const nlohmann::json& j, const std::string& what) const;
  Cursor resume_cursor(const std::vector<Saved>& saved, const std::string& what) const;
  Cursor resplit_cursor(const std::vector<Saved>& saved) const;
  // A token-budget position lies at the start of a batch of its schedule.
  void check_budget_position(const Cursor& c, const std::string& what) const {
    const auto sched = schedule(c);
    const std::int64_t k = c.batch_index - c.sched0;
    if (!sched || (c.pos >= c.len && k == sched->batches())) return;
    core::require(k >= 0 && k < sched->batches() && sched->start(k) == c.pos,
                  what + "is inconsistent (position " + std::to_string(c.pos) + " is not where " +
                      "token-budget batch " + std::to_string(c.batch_index) + " starts)");
  }

  void fail(std::string msg, bool input_error = true) {
    Out e;
    e.kind = Out::error;
    e.message = std::move(msg);
    e.input_error = input_error;
    out->push(std::move(e));
  }

  // The collator thread's body: epochs of batches until stopped. Never throws: a failure reaches
  // the caller's next() as an error naming it.
  void collate(Cursor c) {
    try {
      while (!stop) {
        if (c.pos < c.len) {
          if (!run_epoch(c)) return;
          continue;
        }
        Out e;
        e.kind = Out::end;
        e.after = fresh(c.epoch + 1, c.counters);
        c = e.after;
        if (!out->push(std::move(e))) return;
      }
    } catch (const core::InputError& e) {
      fail(e.what());
    } catch (const core::Error& e) {
      fail(e.what(), false);
    } catch (const std::exception& e) {
      fail(std::string("data loader: the batch collator failed: ") + e.what(), false);
    }
  }

  // The rest of epoch c.epoch; false when the collator is to stop (stopped or failed).
  bool run_epoch(Cursor& c) {
    const auto sched = schedule(c);
    Workers workers(list, o, c, tok, pool.get(), sched);
    while (c.pos < c.len && !stop) {
      Batch b = sched ? new_budget_batch(*sched, c)
                      : new_batch(std::min<std::int64_t>(o.batch_size, c.len - c.pos), c);
      if (fill_batch(b, workers, c) != Fill::full) return false;
      ++c.batch_index;
      Out ob;
      ob.kind = Out::batch;
      ob.b = std::move(b);
      ob.after = c;
      if (!out->push(std::move(ob))) return false;
    }
    return !stop;
  }

  // The batches of epoch c's rest when they follow a token budget; else null.
  std::shared_ptr<const detail::RankSchedule> schedule(const Cursor& c) const {
    if (!o.token_budget()) return nullptr;
    return std::make_shared<const detail::RankSchedule>(
        o, c.epoch, static_cast<std::uint64_t>(c.sched0), c.len);
  }

  // schedule(c) for the caller's thread (position() each step): kept while the epoch is the same.
  mutable std::shared_ptr<const detail::RankSchedule> caller_sched;
  mutable std::array<std::int64_t, 3> caller_key{-1, -1, -1};
  std::shared_ptr<const detail::RankSchedule> caller_schedule(const Cursor& c) const {
    const std::array<std::int64_t, 3> key{c.epoch, c.sched0, c.len};
    if (key != caller_key) {
      caller_sched = schedule(c);
      caller_key = key;
    }
    return caller_sched;
  }

  Batch new_budget_batch(const detail::RankSchedule& sched, const Cursor& c) {
    const std::int64_t k = c.batch_index - c.sched0;
    if (k < 0 || k >= sched.batches() || sched.start(k) != c.pos)
      throw core::Error("data loader: token-budget batch " + std::to_string(k) + " of " +
                        std::to_string(sched.batches()) + " does not start at sample " +
                        std::to_string(c.pos));
    const auto& bb = sched.batch(k);
    return new_batch(std::min(bb.count, c.len - c.pos), c, bb.seq_len);
  }

  Batch new_batch(std::int64_t n, const Cursor& c, std::int64_t seq_len = 0) {
    const int S = o.image_size;
    Batch b;
    try {
      detail::fault_point("batch");
      if (naflex())
        b.images = reuse_or_empty(spare_images,
                                  {n, seq_len > 0 ? seq_len : o.naflex_max_tokens,
                                   std::int64_t{o.naflex_patch} * o.naflex_patch * 3},
                                  at::kByte);
      else
        b.images = reuse_or_empty(spare_images, {n, S, S, 3}, at::kByte);
      b.tokens = reuse_or_empty(spare_tokens, {n, tok->context_length()}, at::kLong);
    } catch (const std::exception& e) {
      throw core::Error(std::string("data loader: cannot allocate a batch of ") +
                        std::to_string(n) + " samples" + (pin ? " in pinned memory" : "") +
                        " (data.pin_memory=" + o.pin_memory + "): " + e.what());
    }
    b.keys.resize(static_cast<std::size_t>(n));
    if (naflex()) b.grids = at::empty({n, 2}, at::TensorOptions().dtype(at::kLong));
    if (!o.label_key.empty()) b.labels = at::empty({n}, at::TensorOptions().dtype(at::kLong));
    if (!o.regions_key.empty()) b.regions.resize(static_cast<std::size_t>(n));
    b.epoch = c.epoch;
    b.index_in_epoch = c.batch_index;
    return b;
  }

  // Sample j of the epoch comes from worker j % workers.
  Fill fill_batch(Batch& b, Workers& workers, Cursor& c) {
    for (std::int64_t s = 0; s < b.images.size(0); ++s) {
      const int w = static_cast<int>(c.pos % o.workers);
      const Fill f = take_sample(b, s, workers.queue(w), c, w);
      if (f != Fill::full) return f;
      ++c.pos;
    }
    return Fill::full;
  }

  // Pops worker w's items until a good one fills slot s; counts the bad ones and events.
  Fill take_sample(Batch& b, std::int64_t s, BoundedQueue<Item>& q, Cursor& c, int w) {
    while (true) {
      Item it;
      if (!q.pop(it)) return Fill::stopped;
      if (it.kind == Item::good) {
        if (!o.regions_key.empty() && it.regions.empty()) ++c.counters.without_regions;
        put_sample(b, s, it);
        c.next_raw[w] = it.raw_index + 1;
        c.next_piece[w] = it.piece;
        ++c.counters.samples;
        if (it.repeated) ++c.counters.repeated;
        return Fill::full;
      }
      if (it.kind == Item::fatal) {
        fail(it.message);
        return Fill::failed;
      }
      detail::add_counter(c.counters, it.counter);
      if (it.kind == Item::bad && too_bad(c.counters)) {
        const auto& k = c.counters;
        fail("data: " + std::to_string(k.bad_samples()) + " of " +
             std::to_string(k.samples + k.bad_samples()) + " samples were bad (" +
             detail::bad_sample_summary(k) +
             "), more than data.max_bad_fraction = " + std::to_string(o.max_bad_fraction) +
             " in '" + o.shards + "'; the last: " + it.message);
        return Fill::failed;
      }
    }
  }

  bool naflex() const { return o.naflex_patch > 0 && o.naflex_max_tokens > 0; }
  // The largest picture a worker writes: the pool's buffer size.
  std::size_t image_bytes() const {
    std::int64_t tokens = o.naflex_max_tokens;
    for (const std::int64_t L : o.naflex_seq_lens) tokens = std::max(tokens, L);
    return naflex() ? static_cast<std::size_t>(tokens) * o.naflex_patch * o.naflex_patch * 3
                    : static_cast<std::size_t>(o.image_size) * o.image_size * 3;
  }

  void put_sample(Batch& b, std::int64_t s, Item& it) {
    const auto image_bytes = static_cast<std::size_t>(b.images.stride(0));
    if (o.token_budget() && it.seq_len != b.images.size(1))
      throw core::Error("data loader: sample '" + it.key + "' was cut for " +
                        std::to_string(it.seq_len) + " patches, its batch holds " +
                        std::to_string(b.images.size(1)));
    const std::int64_t L = tok->context_length();
    std::memcpy(b.images.data_ptr<std::uint8_t>() + s * image_bytes, it.image.get(), image_bytes);
    pool->put(std::move(it.image));
    std::memcpy(b.tokens.data_ptr<std::int64_t>() + s * L, it.tokens.data(),
                static_cast<std::size_t>(L) * sizeof(std::int64_t));
    b.keys[static_cast<std::size_t>(s)] = std::move(it.key);
    if (b.labels.defined()) b.labels.data_ptr<std::int64_t>()[s] = it.label;
    if (!b.regions.empty()) b.regions[static_cast<std::size_t>(s)] = std::move(it.regions);
    if (b.grids.defined()) {
      b.grids.data_ptr<std::int64_t>()[2 * s] = it.grid.rows;
      b.grids.data_ptr<std::int64_t>()[2 * s + 1] = it.grid.cols;
    }
  }
};

Loader::Loader(LoaderOptions options, std::shared_ptr<const tokenizer::Tokenizer> tokenizer)
    : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  m.o = std::move(options);
  core::require(tokenizer != nullptr, "data: the loader needs a tokenizer");
  core::require(m.o.batch_size >= 1, "data: batch size must be at least 1");
  core::require(m.o.image_size >= 1, "data: image size must be at least 1");
  core::require(m.o.workers >= 1, "data.workers must be at least 1");
  core::require(!m.o.image_keys.empty(), "data.image_keys is empty");
  core::require(m.o.pin_memory == "auto" || m.o.pin_memory == "on" || m.o.pin_memory == "off",
                "data: pin_memory must be auto, on or off, not '" + m.o.pin_memory + "'");
  check_regions_key(m.o);
  m.tok = std::move(tokenizer);
  detail::check_token_budget(m.o);  // before the plan divides by its lengths
  m.list = parse_shard_list(m.o.shards, m.o.source_weights);
  m.T = detail::rank_samples(m.list, m.o);
  m.dataset = detail::epoch_samples(m.list, m.o);
  m.pin = m.o.pin_memory == "on" || (m.o.pin_memory == "auto" && at::hasCUDA());
  m.returned = m.fresh(0, {});
  core::require(m.o.naflex_patch >= 0 && m.o.naflex_max_tokens >= 0,
                "data: NaFlex patch size and token budget must not be negative");
  if (m.o.token_budget()) m.S = detail::RankSchedule(m.o, 0, 0, m.T).batches();
  m.pool = std::make_unique<detail::BufferPool>(m.image_bytes());
  // The plan of the first epoch checks that the data can be split as asked.
  if (!m.o.resampled) detail::plan_epoch(m.list, m.o, 0);
}

Loader::~Loader() {
  impl_->shutdown();
}

std::optional<Batch> Loader::next() {
  auto& m = *impl_;
  if (!m.failed.empty()) {
    if (!m.failed_input) throw core::Error(m.failed);
    throw core::InputError(m.failed);
  }
  if (!m.running) m.start();
  Out o;
  if (!m.out->pop(o)) throw core::Error("data: the loader was stopped");
  if (o.kind == Out::error) {
    m.failed = o.message;
    m.failed_input = o.input_error;
    m.shutdown();
    if (!o.input_error) throw core::Error(o.message);
    throw core::InputError(o.message);
  }
  m.returned = std::move(o.after);
  if (o.kind == Out::end) return std::nullopt;
  return std::move(o.b);
}

bool Loader::ready(double seconds) {
  auto& m = *impl_;
  if (!m.failed.empty()) return true;
  if (!m.running) m.start();
  return m.out->wait_for_item(seconds);
}

std::int64_t Loader::batches_per_epoch() const {
  if (impl_->o.token_budget()) return impl_->S;
  return (impl_->T + impl_->o.batch_size - 1) / impl_->o.batch_size;
}
std::int64_t Loader::samples_per_epoch() const {
  return impl_->T;
}
std::int64_t Loader::dataset_size() const {
  return impl_->dataset;
}
Loader::Position Loader::position() const {
  const auto& c = impl_->returned;
  const std::int64_t left = std::max<std::int64_t>(0, c.len - c.pos), B = impl_->o.batch_size;
  if (const auto sched = impl_->caller_schedule(c); sched && left > 0)
    return {c.epoch, sched->batches() - (c.batch_index - c.sched0)};
  return {c.epoch, (left + B - 1) / B};
}
BadDataCounters Loader::counters() const {
  return impl_->returned.counters;
}
const LoaderOptions& Loader::options() const {
  return impl_->o;
}

nlohmann::json Loader::state() const {
  const auto& m = *impl_;
  const auto& c = m.returned;
  nlohmann::json j = {{"version", kStateVersion},
                      {"seed", m.o.seed},
                      {"rank", m.o.rank},
                      {"world_size", m.o.world_size},
                      {"workers", m.o.workers},
                      {"resampled", m.o.resampled},
                      {"shards", m.list.shards.size()},
                      {"samples_per_epoch", m.T},
                      {"epoch", c.epoch},
                      {"position", c.pos},
                      {"batch_index", c.batch_index},
                      {"next_raw", c.next_raw},
                      {"counters", c.counters.to_json()}};
  if (!c.pieces.empty()) {
    j["resplit"] = detail::pieces_json(c);
    j["next_piece"] = c.next_piece;
  }
  if (m.o.token_budget()) {
    j["token_budget"] = detail::budget_text(m.o);
    j["budget_origin"] = c.sched0;
  }
  return j;
}

// The saved run read the same data the same way, or no position of it means anything here.
void Loader::Impl::check_same_data(const nlohmann::json& j, const std::string& what) const {
  core::require(j.at("seed").get<std::uint64_t>() == o.seed,
                what + "was saved with seed " + j.at("seed").dump() + ", this run has " +
                    std::to_string(o.seed));
  core::require(j.at("resampled").get<bool>() == o.resampled,
                what + "was saved with another data.resampled");
  core::require(j.at("shards").get<std::size_t>() == list.shards.size(),
                what + "was saved with " + j.at("shards").dump() + " shards, this run lists " +
                    std::to_string(list.shards.size()));
}

Cursor Loader::Impl::resume_cursor(const std::vector<Saved>& saved, const std::string& what) const {
  const Layout here{o.world_size, o.workers, T, detail::budget_text(o)};
  const Saved& a = saved.front();
  if (a.layout == here) {
    core::require(saved.size() == 1 || static_cast<std::size_t>(o.rank) < saved.size(),
                  what + "list has no state for rank " + std::to_string(o.rank));
    const Saved& s = saved.size() == 1 ? a : saved[static_cast<std::size_t>(o.rank)];
    core::require(s.rank == o.rank, what + "belongs to rank " + std::to_string(s.rank) +
                                        ", not rank " + std::to_string(o.rank) +
                                        " (each rank restores its own state)");
    check_budget_position(s.c, what);
    return s.c;
  }
  if (saved.size() == 1 && a.c.pieces.empty() && (a.c.pos == 0 || a.c.pos >= a.c.len))
    return fresh(a.c.epoch + (a.c.pos == 0 ? 0 : 1), a.c.counters);  // an epoch boundary
  if (saved.size() == 1 && o.reshard_to_next_epoch && !detail::complete(saved)) {
    CLIPPER_WARN("data: resuming with " << o.world_size << " rank(s) x " << o.workers
                                        << " workers from one state of " << a.layout.world
                                        << " rank(s): the rest of epoch " << a.c.epoch
                                        << " is skipped, epoch " << a.c.epoch + 1 << " starts now");
    return fresh(a.c.epoch + 1, a.c.counters);
  }
  core::require(detail::complete(saved),
                what + "was saved mid-epoch by " + detail::layout_text(a.layout) +
                    "; this run has " + detail::layout_text(here) +
                    ". Re-splitting the rest of the epoch needs the states of " + "all " +
                    std::to_string(a.layout.world) + " saved ranks of one checkpoint, got " +
                    std::to_string(saved.size()));
  return resplit_cursor(saved);
}

// The rule of docs/data.md ("Another world size or worker count"): what each saved stream had
// left, in saved (rank, worker) order, cut into contiguous ranges for the new ranks x workers.
Cursor Loader::Impl::resplit_cursor(const std::vector<Saved>& saved) const {
  const Saved& a = saved.front();
  BadDataCounters counters;  // saved rank r's go to rank r mod world_size: the sum is kept
  std::int64_t batch_index = 0;
  bool start = true;
  std::vector<detail::Piece> rest;
  for (const Saved& s : saved) {
    if (s.rank % o.world_size == o.rank) counters = detail::counters_sum(counters, s.c.counters);
    batch_index = std::max(batch_index, s.c.batch_index);
    start = start && s.c.pos == 0 && s.c.pieces.empty();
    for (int w = 0; w < s.layout.workers; ++w)
      for (const auto& p : detail::rest_of(s.c, w, s.rank, s.layout.workers))
        if (p.count > 0) rest.push_back(p);
  }
  if (start) return fresh(a.c.epoch, counters);  // an epoch start does not depend on the layout
  std::int64_t R = 0;
  for (const auto& p : rest)  // each rank's total is checked, their sum too
    core::require(!__builtin_add_overflow(R, p.count, &R),
                  "data: loader state: the saved ranks hold more samples than a 64-bit count");
  const auto salt = static_cast<std::uint64_t>(batch_index);
  const std::int64_t len = detail::resplit_rank_samples(R, o, salt);
  if (R == 0 || len == 0 || o.reshard_to_next_epoch) {
    if (R > 0)
      CLIPPER_WARN("data: resuming with "
                   << o.world_size << " rank(s) x " << o.workers << " workers: the last " << R
                   << " samples of epoch " << a.c.epoch << " are skipped"
                   << (len == 0 ? " (fewer than one batch per rank)" : "") << ", epoch "
                   << a.c.epoch + 1 << " starts now");
    return fresh(a.c.epoch + 1, counters);
  }
  if (o.drop_last && len * o.world_size < R)
    CLIPPER_WARN("data: resuming with " << o.world_size << " rank(s) x " << o.workers
                                        << " workers: the last " << R - len * o.world_size
                                        << " samples of epoch " << a.c.epoch
                                        << " are skipped (drop_last: whole batches per rank)");
  Cursor c = fresh(a.c.epoch, counters);
  c.pieces = detail::resplit(rest, o, salt);
  c.base = a.c.base;
  c.len = len;
  c.batch_index = batch_index;
  c.sched0 = batch_index;
  CLIPPER_INFO("data: the rest of epoch "
               << a.c.epoch << " (" << R << " samples left by " << a.layout.world << " rank(s) x "
               << a.layout.workers << " workers) is re-split: " << len << " samples on this rank");
  return c;
}

namespace {

// A state saved inside a re-split epoch names the layout its pieces were cut for. One the data
// cannot feed is the state's fault: an InputError naming it here, not a worker that fails to
// start later with an internal error.
void check_saved_layout(const ShardList& list, const LoaderOptions& o, const Cursor& c,
                        const std::string& what) {
  if (c.pieces.empty()) return;
  LoaderOptions saved = o;
  saved.world_size = c.base.world;
  saved.workers = c.base.workers;
  try {
    std::set<int> ranks;
    for (int w = 0; w < o.workers; ++w)
      for (const auto& p : detail::rest_of(c, w, o.rank, o.workers)) ranks.insert(p.rank);
    for (int r : ranks) {
      saved.rank = r;
      detail::plan_epoch(list, saved, c.epoch, c.base.T);
    }
  } catch (const core::InputError&) {
    throw;
  } catch (const std::exception& e) {
    throw core::InputError(what + "names a re-split layout of " + std::to_string(c.base.world) +
                           " rank(s) x " + std::to_string(c.base.workers) +
                           " workers that the data cannot feed: " + e.what());
  }
}

}  // namespace

void Loader::load_state(const nlohmann::json& j) {
  load_states({j});
}

void Loader::load_states(const std::vector<nlohmann::json>& states) {
  auto& m = *impl_;
  const std::string what = "data: loader state ";
  try {
    core::require(!states.empty(), what + "list is empty");
    std::vector<Saved> saved;
    for (std::size_t i = 0; i < states.size(); ++i) {
      saved.push_back(detail::parse_saved(states[i], what));
      m.check_same_data(states[i], what);
    }
    Cursor c = m.resume_cursor(saved, what);
    check_saved_layout(m.list, m.o, c, what);
    m.shutdown();
    m.failed.clear();
    m.returned = std::move(c);
  } catch (const nlohmann::json::exception& e) {
    throw core::InputError(what + "is malformed: " + e.what());
  }
}

}  // namespace clipper::data
