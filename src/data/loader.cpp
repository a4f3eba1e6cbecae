#include "clipper/data/loader.hpp"

#include <ATen/Context.h>
#include <ATen/ops/empty.h>

#include <cstring>
#include <thread>

#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "worker.hpp"

namespace clipper::data {

using detail::BoundedQueue;
using detail::Item;

namespace {
constexpr int kStateVersion = 1;

struct Cursor {
  std::int64_t epoch = 0, pos = 0, batch_index = 0;
  std::vector<std::int64_t> next_raw;  // per worker: raw outputs consumed this epoch
  BadDataCounters counters;
};

struct Out {
  enum Kind { batch, end, error } kind = batch;
  Batch b;
  Cursor after;
  std::string message;
};
}  // namespace

struct Loader::Impl {
  LoaderOptions o;
  std::shared_ptr<const tokenizer::Tokenizer> tok;
  ShardList list;
  std::int64_t T = 0, dataset = 0;
  bool pin = false;
  Cursor returned;
  std::string failed;

  std::thread collator;
  std::atomic<bool> stop{false};
  std::unique_ptr<BoundedQueue<Out>> out;
  bool running = false;
  std::unique_ptr<detail::BufferPool> pool;
  // Batch tensors handed out earlier and dropped by the caller since are reused (CPU memory only;
  // pinned memory has its own caching allocator).
  std::vector<at::Tensor> spare_images, spare_tokens;

  at::Tensor reuse_or_empty(std::vector<at::Tensor>& spares, at::IntArrayRef shape,
                            at::ScalarType type) {
    if (!pin)
      for (auto& t : spares)
        if (t.use_count() == 1 && t.storage().use_count() == 1 && t.sizes() == shape) return t;
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
    c.next_raw.assign(static_cast<std::size_t>(o.workers), 0);
    c.counters = counters;
    return c;
  }

  void start() {
    stop = false;
    out = std::make_unique<BoundedQueue<Out>>(
        static_cast<std::size_t>(std::max(1, o.prefetch_batches)));
    running = true;
    collator = std::thread([this, c = returned]() mutable { collate(std::move(c)); });
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

  void collate(Cursor c) {
    const int K = o.workers;
    const int S = o.image_size;
    const std::int64_t L = tok->context_length();
    const std::size_t image_bytes = static_cast<std::size_t>(S) * S * 3;
    auto fail = [&](std::string msg) {
      Out e;
      e.kind = Out::error;
      e.message = std::move(msg);
      out->push(std::move(e));
    };
    while (!stop) {
      if (c.pos >= T) {
        Out e;
        e.kind = Out::end;
        e.after = fresh(c.epoch + 1, c.counters);
        c = e.after;
        if (!out->push(std::move(e))) return;
        continue;
      }
      detail::EpochPlan plan;
      try {
        plan = detail::plan_epoch(list, o, c.epoch);
      } catch (const std::exception& e) {
        fail(e.what());
        return;
      }
      std::atomic<bool> epoch_stop{false};
      std::vector<std::unique_ptr<BoundedQueue<Item>>> queues;
      std::vector<std::thread> threads;
      const std::size_t qcap =
          static_cast<std::size_t>(std::max<std::int64_t>(4, 2 * o.batch_size / K + 2));
      for (int w = 0; w < K; ++w) {
        queues.push_back(std::make_unique<BoundedQueue<Item>>(qcap));
        detail::WorkerArgs a;
        a.list = &list;
        a.options = &o;
        a.plan = plan.workers[w];
        a.skip_raw = c.next_raw[w];
        const std::int64_t consumed = c.pos / K + (w < c.pos % K ? 1 : 0);
        a.quota_remaining = plan.workers[w].quota - consumed;
        a.tokenizer = tok;
        a.out = queues.back().get();
        a.stop = &epoch_stop;
        a.pool = pool.get();
        threads.emplace_back(detail::run_worker, std::move(a));
      }
      auto stop_workers = [&] {
        epoch_stop = true;
        for (auto& q : queues) q->close();
        for (auto& t : threads) t.join();
      };
      bool ok = true;
      while (ok && c.pos < T && !stop) {
        const std::int64_t n = std::min<std::int64_t>(o.batch_size, T - c.pos);
        Batch b;
        b.images = reuse_or_empty(spare_images, {n, S, S, 3}, at::kByte);
        b.tokens = reuse_or_empty(spare_tokens, {n, L}, at::kLong);
        b.keys.resize(static_cast<std::size_t>(n));
        if (!o.label_key.empty()) b.labels = at::empty({n}, at::TensorOptions().dtype(at::kLong));
        b.epoch = c.epoch;
        b.index_in_epoch = c.batch_index;
        auto* img = b.images.data_ptr<std::uint8_t>();
        auto* tokp = b.tokens.data_ptr<std::int64_t>();
        for (std::int64_t s = 0; s < n && ok; ++s) {
          const int w = static_cast<int>(c.pos % K);
          while (true) {
            Item it;
            if (!queues[w]->pop(it)) {
              ok = false;
              break;
            }
            if (it.kind == Item::good) {
              std::memcpy(img + s * image_bytes, it.image.get(), image_bytes);
              pool->put(std::move(it.image));
              std::memcpy(tokp + s * L, it.tokens.data(),
                          static_cast<std::size_t>(L) * sizeof(std::int64_t));
              b.keys[static_cast<std::size_t>(s)] = std::move(it.key);
              if (b.labels.defined()) b.labels.data_ptr<std::int64_t>()[s] = it.label;
              c.next_raw[w] = it.raw_index + 1;
              ++c.counters.samples;
              if (it.repeated) ++c.counters.repeated;
              break;
            }
            if (it.kind == Item::fatal) {
              fail(it.message);
              ok = false;
              break;
            }
            detail::add_counter(c.counters, it.counter);
            if (it.kind == Item::bad && too_bad(c.counters)) {
              const auto& k = c.counters;
              fail("data: " + std::to_string(k.bad_samples()) + " of " +
                   std::to_string(k.samples + k.bad_samples()) +
                   " samples were bad (corrupt image " + std::to_string(k.image_corrupt) +
                   ", too large " + std::to_string(k.image_too_large) + ", no image " +
                   std::to_string(k.missing_image) + ", no text " + std::to_string(k.missing_text) +
                   "), more than data.max_bad_fraction = " + std::to_string(o.max_bad_fraction) +
                   " in '" + o.shards + "'");
              ok = false;
              break;
            }
          }
          if (ok) ++c.pos;
        }
        if (!ok) break;
        ++c.batch_index;
        Out ob;
        ob.kind = Out::batch;
        ob.b = std::move(b);
        ob.after = c;
        if (!out->push(std::move(ob))) {
          ok = false;
          break;
        }
      }
      stop_workers();
      if (!ok || stop) return;
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
  m.tok = std::move(tokenizer);
  m.list = parse_shard_list(m.o.shards, m.o.source_weights);
  m.T = detail::rank_samples(m.list, m.o);
  m.dataset = detail::epoch_samples(m.list, m.o);
  m.pin = m.o.pin_memory == "on" || (m.o.pin_memory == "auto" && at::hasCUDA());
  m.returned = m.fresh(0, {});
  m.pool = std::make_unique<detail::BufferPool>(static_cast<std::size_t>(m.o.image_size) *
                                                m.o.image_size * 3);
  // The plan of the first epoch checks that the data can be split as asked.
  if (!m.o.resampled) detail::plan_epoch(m.list, m.o, 0);
}

Loader::~Loader() {
  impl_->shutdown();
}

std::optional<Batch> Loader::next() {
  auto& m = *impl_;
  if (!m.failed.empty()) throw core::InputError(m.failed);
  if (!m.running) m.start();
  Out o;
  if (!m.out->pop(o)) throw core::Error("data: the loader was stopped");
  if (o.kind == Out::error) {
    m.failed = o.message;
    m.shutdown();
    throw core::InputError(o.message);
  }
  m.returned = std::move(o.after);
  if (o.kind == Out::end) return std::nullopt;
  return std::move(o.b);
}

std::int64_t Loader::batches_per_epoch() const {
  return (impl_->T + impl_->o.batch_size - 1) / impl_->o.batch_size;
}
std::int64_t Loader::samples_per_epoch() const {
  return impl_->T;
}
std::int64_t Loader::dataset_size() const {
  return impl_->dataset;
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
  return {{"version", kStateVersion},
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
}

void Loader::load_state(const nlohmann::json& j) {
  auto& m = *impl_;
  const std::string what = "data: loader state ";
  try {
    core::require(j.is_object() && j.value("version", 0) == kStateVersion,
                  what + "has no version " + std::to_string(kStateVersion) + " (got " +
                      j.dump().substr(0, 80) + ")");
    core::require(j.at("seed").get<std::uint64_t>() == m.o.seed,
                  what + "was saved with seed " + j.at("seed").dump() + ", this run has " +
                      std::to_string(m.o.seed));
    core::require(j.at("resampled").get<bool>() == m.o.resampled,
                  what + "was saved with another data.resampled");
    core::require(j.at("shards").get<std::size_t>() == m.list.shards.size(),
                  what + "was saved with " + j.at("shards").dump() + " shards, this run lists " +
                      std::to_string(m.list.shards.size()));
    const int W = j.at("world_size").get<int>(), K = j.at("workers").get<int>(),
              r = j.at("rank").get<int>();
    Cursor c =
        m.fresh(j.at("epoch").get<std::int64_t>(), BadDataCounters::from_json(j.at("counters")));
    const std::int64_t pos = j.at("position").get<std::int64_t>();
    const std::int64_t saved_T = j.at("samples_per_epoch").get<std::int64_t>();
    if (W == m.o.world_size && K == m.o.workers && saved_T == m.T) {
      core::require(r == m.o.rank, what + "belongs to rank " + std::to_string(r) + ", not rank " +
                                       std::to_string(m.o.rank) +
                                       " (each rank restores its own state)");
      c.pos = pos;
      c.batch_index = j.at("batch_index").get<std::int64_t>();
      c.next_raw = j.at("next_raw").get<std::vector<std::int64_t>>();
      core::require(static_cast<int>(c.next_raw.size()) == K && pos >= 0 && pos <= m.T,
                    what + "is inconsistent");
    } else if (pos == 0) {
      // An epoch start does not depend on the old layout.
    } else if (pos >= saved_T || m.o.reshard_to_next_epoch) {
      if (pos < saved_T)
        CLIPPER_WARN("data: resuming with "
                     << m.o.world_size << " rank(s) x " << m.o.workers
                     << " workers from a state of " << W << " x " << K << ": the rest of epoch "
                     << c.epoch << " is skipped, epoch " << c.epoch + 1 << " starts now");
      c = m.fresh(c.epoch + 1, c.counters);
    } else {
      throw core::InputError(
          what + "was saved mid-epoch with " + std::to_string(W) + " rank(s) x " +
          std::to_string(K) + " workers (" + std::to_string(saved_T) +
          " samples per rank); this run has " + std::to_string(m.o.world_size) + " x " +
          std::to_string(m.o.workers) + " (" + std::to_string(m.T) +
          "). A mid-epoch position only resumes with the same layout; resume at an epoch "
          "boundary or allow skipping to the next epoch (reshard_to_next_epoch)");
    }
    m.shutdown();
    m.failed.clear();
    m.returned = std::move(c);
  } catch (const nlohmann::json::exception& e) {
    throw core::InputError(what + "is malformed: " + e.what());
  }
}

}  // namespace clipper::data
