#include "clipper/dist/param_units.hpp"

#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <unordered_map>

#include "clipper/core/error.hpp"
#include "clipper/dist/process_group.hpp"

namespace clipper::dist {
namespace {

// "<...>.resblocks.N" (blocks, layers, ResNet's layerK) of a parameter inside a block, the
// outermost one; "" if none.
std::string block_of(const std::string& name) {
  static const std::regex re(R"(^((?:.*?\.)?(?:resblocks|blocks|layers|layer\d+)\.\d+)\.)");
  std::smatch m;
  return std::regex_search(name, m, re) ? m[1].str() : std::string();
}

std::string first_component(const std::string& name) {
  return name.substr(0, name.find('.'));
}

std::int64_t bucket_bytes(const FlatBucket& b) {
  return b.padded * static_cast<std::int64_t>(c10::elementSize(b.dtype));
}

}  // namespace

std::vector<std::string> unit_names(const std::vector<std::string>& param_names) {
  std::vector<std::string> blocks;
  std::set<std::string> towers;  // first components of names with blocks
  for (const auto& n : param_names) {
    blocks.push_back(block_of(n));
    if (!blocks.back().empty()) towers.insert(first_component(blocks.back()));
  }
  std::vector<std::string> units;
  for (std::size_t i = 0; i < param_names.size(); ++i) {
    const auto& n = param_names[i];
    const bool in_tower = n.find('.') != std::string::npos && towers.count(first_component(n));
    const bool logit = n == "logit_scale" || n == "logit_bias";
    units.push_back(!blocks[i].empty() ? blocks[i]
                    : in_tower         ? first_component(n)
                    : logit            ? "logit"
                                       : "");
  }
  return units;
}

FlatLayout unit_layout(const std::vector<at::Tensor>& params,
                       const std::vector<std::string>& param_names, int world_size) {
  const auto units = unit_names(param_names);
  std::vector<std::string> order;  // by first appearance
  std::map<std::string, std::vector<std::size_t>> members;
  for (std::size_t i = 0; i < units.size(); ++i) {
    if (!members.count(units[i])) order.push_back(units[i]);
    members[units[i]].push_back(i);
  }
  FlatLayout layout;
  layout.world_size = world_size;
  for (auto u = order.rbegin(); u != order.rend(); ++u) {
    const auto& idx = members[*u];
    FlatBucket b;
    b.dtype = params[idx.front()].scalar_type();
    b.device = params[idx.front()].device();
    for (auto j = idx.rbegin(); j != idx.rend(); ++j) {
      core::require(params[*j].scalar_type() == b.dtype && params[*j].device() == b.device,
                    "dist.zero 3: parameter '" + param_names[*j] + "' differs in dtype or device " +
                        "from the rest of its unit '" + *u + "'");
      b.params.push_back(*j);
      b.offsets.push_back(b.numel);
      b.numel += params[*j].numel();
    }
    b.padded = (b.numel + world_size - 1) / world_size * world_size;
    layout.buckets.push_back(std::move(b));
  }
  return layout;
}

using Clock = std::chrono::steady_clock;
constexpr std::size_t kOffOrder = static_cast<std::size_t>(-1);

// An all-gather in flight into a unit's buffer (or, in bf16, into `out`, widened when it ends).
struct InFlight {
  std::size_t unit = 0;
  PendingWork work;
  at::Tensor out, in;
  bool rounded = false;
};

struct ParamUnits::State {
  std::vector<at::Tensor> params;
  std::shared_ptr<ProcessGroup> pg;
  UnitOptions options;
  FlatLayout layout;
  std::vector<std::string> names;     // per unit, for collective labels
  std::vector<c10::Storage> storage;  // per unit: the storage its parameters view
  std::vector<at::Tensor> shards;
  std::vector<char> resident;  // per unit: its buffer is allocated
  std::vector<char> whole;     // ... and holds the gathered values
  std::vector<char> rounded;   // ... gathered in bf16: never taken back into the shard
  std::list<std::size_t> lru;  // resident units, least recently used first
  std::unordered_map<const c10::StorageImpl*, std::size_t> unit_of;
  std::optional<InFlight> in_flight;
  // The step pass: the order units were first used in (last pass, this pass) and where this
  // pass stands in the last one's (npos: off the recorded order, no more prefetching).
  bool step_pass = false;
  std::vector<std::size_t> order, seen;
  std::size_t cursor = 0;
  std::int64_t whole_now = 0, whole_peak = 0;
  UnitCounters counters;
  std::mutex mutex;

  at::TensorOptions options_of(std::size_t k) const {
    return at::TensorOptions().dtype(layout.buckets[k].dtype).device(layout.buckets[k].device);
  }

  // The unit's buffer as one tensor (a new tensor on the same storage: the parameters' version
  // counters are not touched).
  at::Tensor flat(std::size_t k) const {
    return at::empty({0}, options_of(k)).set_(storage[k], 0, {layout.buckets[k].padded}, {1});
  }

  at::Tensor my_slice(std::size_t k) const {
    const std::int64_t n = layout.shard_numel(k);
    return flat(k).narrow(0, pg->rank() * n, n);
  }

  void make_unit(std::size_t k) {
    const auto& b = layout.buckets[k];
    at::Tensor buffer = at::zeros({b.padded}, options_of(k));
    for (std::size_t j = 0; j < b.params.size(); ++j) {
      auto& p = params[b.params[j]];
      auto view = buffer.narrow(0, b.offsets[j], p.numel());
      view.copy_(p.detach().reshape({-1}));
      p.set_data(view.view(p.sizes()));
    }
    storage.push_back(buffer.storage());
    unit_of[storage.back().unsafeGetStorageImpl()] = k;
    shards.push_back(at::zeros({layout.shard_numel(k)}, options_of(k)));
    resident.push_back(1);
    whole.push_back(1);
    rounded.push_back(0);
    lru.push_back(k);
    whole_now += bucket_bytes(b);
  }

  void allocate(std::size_t k) {
    auto* impl = storage[k].unsafeGetStorageImpl();
    const auto bytes = static_cast<std::size_t>(bucket_bytes(layout.buckets[k]));
    impl->set_data_ptr_noswap(impl->allocator()->allocate(bytes));
    impl->set_nbytes(bytes);
    resident[k] = 1;
    lru.push_back(k);
    whole_now += bucket_bytes(layout.buckets[k]);
    whole_peak = std::max(whole_peak, whole_now);
  }

  // Frees a resident unit's buffer; with `keep_changes` its shard is taken from it first (the
  // values it was gathered with, or what was written into them since).
  void free(std::size_t k, bool keep_changes) {
    if (!resident[k]) return;
    if (keep_changes && whole[k] && !rounded[k]) shards[k].copy_(my_slice(k));
    auto* impl = storage[k].unsafeGetStorageImpl();
    impl->set_data_ptr_noswap(at::DataPtr(nullptr, layout.buckets[k].device));
    impl->set_nbytes(0);
    resident[k] = whole[k] = rounded[k] = 0;
    lru.remove(k);
    whole_now -= bucket_bytes(layout.buckets[k]);
  }

  std::string label(std::size_t k) const {
    return "parameter all_gather, unit " + std::to_string(k + 1) + "/" +
           std::to_string(layout.buckets.size()) + " '" + names[k] + "'";
  }

  // Starts unit k's all-gather (at most one in flight: settle() first).
  void start(std::size_t k) {
    allocate(k);
    InFlight f;
    f.unit = k;
    f.rounded = step_pass && options.gather_bf16 && layout.buckets[k].dtype == at::kFloat;
    f.in = f.rounded ? shards[k].to(at::kBFloat16) : shards[k];
    f.out = f.rounded ? at::empty({layout.buckets[k].padded}, f.in.options()) : flat(k);
    f.work = pg->all_gather_async(f.out, f.in, label(k));
    in_flight = std::move(f);
    ++counters.gathers;
  }

  // Waits for the gather in flight, if any: its unit is whole.
  void settle() {
    if (!in_flight) return;
    const auto t = Clock::now();
    in_flight->work.wait();
    counters.wait_s += std::chrono::duration<double>(Clock::now() - t).count();
    const std::size_t k = in_flight->unit;
    if (in_flight->rounded) flat(k).copy_(in_flight->out);
    whole[k] = 1;
    rounded[k] = in_flight->rounded ? 1 : 0;
    in_flight.reset();
  }

  std::size_t capacity() const {
    return static_cast<std::size_t>(options.max_gathered) + (step_pass && options.prefetch ? 1 : 0);
  }

  // Frees least recently used units (none of `keep`, nor one in flight) until one more fits.
  void make_room(const std::vector<std::size_t>& keep) {
    while (lru.size() + 1 > capacity()) {
      auto it = std::find_if(lru.begin(), lru.end(), [&](std::size_t k) {
        return std::find(keep.begin(), keep.end(), k) == keep.end() &&
               !(in_flight && in_flight->unit == k);
      });
      if (it == lru.end()) return;
      free(*it, /*keep_changes=*/true);
    }
  }

  void touch(std::size_t k) {
    lru.remove(k);
    lru.push_back(k);
  }

  // Unit k whole before an operation that reads it (and the units in `keep`).
  void make_whole(std::size_t k, const std::vector<std::size_t>& keep) {
    if (in_flight && in_flight->unit == k) settle();
    if (whole[k]) return touch(k);
    settle();  // one gather in flight at a time
    make_room(keep);
    start(k);
    settle();
  }

  // A step pass starts using unit k: recorded, and the unit that followed it last time is
  // prefetched while this one computes.
  void follow(std::size_t k, const std::vector<std::size_t>& keep) {
    if (!seen.empty() && seen.back() == k) return;
    seen.push_back(k);
    if (!options.prefetch || cursor == kOffOrder) return;
    if (cursor >= order.size() || order[cursor] != k) {
      cursor = kOffOrder;
      return;
    }
    if (++cursor >= order.size()) return;
    const std::size_t next = order[cursor];
    if (resident[next]) return;
    settle();
    auto hold = keep;
    hold.push_back(next);
    make_room(hold);
    start(next);
    ++counters.prefetched;
  }

  void collect(const c10::IValue& v, std::vector<std::size_t>& used) const {
    if (v.isList()) {  // tensor lists, lists of optional tensors
      for (const auto& e : v.toListRef()) collect(e, used);
      return;
    }
    if (!v.isTensor()) return;
    const auto& t = v.toTensor();
    if (!t.defined() || !t.has_storage()) return;
    const auto it = unit_of.find(t.storage().unsafeGetStorageImpl());
    if (it != unit_of.end() && std::find(used.begin(), used.end(), it->second) == used.end())
      used.push_back(it->second);
  }

  // An operation is about to run on `inputs`: the units it reads become whole first.
  void before_op(c10::ArrayRef<const c10::IValue> inputs) {
    std::vector<std::size_t> used;
    for (const auto& v : inputs) collect(v, used);
    if (used.empty()) return;
    std::lock_guard<std::mutex> lock(mutex);
    at::DisableRecordFunctionGuard no_callbacks;  // the gather's own operations
    at::NoGradGuard no_grad;
    for (std::size_t k : used) make_whole(k, used);
    if (step_pass)
      for (std::size_t k : used) follow(k, used);
  }

  void begin_pass(bool step) {
    step_pass = step;
    if (!step) return;
    seen.clear();
    cursor = 0;
  }

  void end_pass() {
    settle();
    if (step_pass) order = seen;
    step_pass = false;
  }
};

namespace {

std::atomic<ParamUnits::State*> g_active{nullptr};

std::unique_ptr<at::ObserverContext> on_operation(const at::RecordFunction& fn) {
  if (auto* s = g_active.load(std::memory_order_acquire)) s->before_op(fn.inputs());
  return nullptr;
}

}  // namespace

ParamUnits::ParamUnits(std::vector<at::Tensor> params, const std::vector<std::string>& names,
                       std::shared_ptr<ProcessGroup> pg, UnitOptions options)
    : state_(std::make_shared<State>()) {
  auto& s = *state_;
  core::require(options.max_gathered >= 1, "ParamUnits: max_gathered must be at least 1");
  s.params = std::move(params);
  s.pg = std::move(pg);
  s.options = options;
  s.layout = unit_layout(s.params, names, s.pg->size());
  const auto units = unit_names(names);
  at::NoGradGuard no_grad;
  for (std::size_t k = 0; k < s.layout.buckets.size(); ++k) {
    const auto& unit = units[s.layout.buckets[k].params.front()];
    s.names.push_back(unit.empty() ? "(rest)" : unit);
    s.make_unit(k);
  }
}

ParamUnits::~ParamUnits() = default;

const FlatLayout& ParamUnits::layout() const {
  return state_->layout;
}

std::vector<at::Tensor>& ParamUnits::shards() {
  return state_->shards;
}

void ParamUnits::release() {
  auto& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  at::NoGradGuard no_grad;
  s.settle();
  for (std::size_t k = 0; k < s.shards.size(); ++k) s.free(k, /*keep_changes=*/true);
}

void ParamUnits::drop() {
  auto& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  s.settle();
  for (std::size_t k = 0; k < s.shards.size(); ++k) s.free(k, /*keep_changes=*/false);
}

const std::vector<at::Tensor>& ParamUnits::current_shards() {
  auto& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  at::NoGradGuard no_grad;
  s.settle();
  for (std::size_t k = 0; k < s.shards.size(); ++k)
    if (s.whole[k] && !s.rounded[k]) s.shards[k].copy_(s.my_slice(k));
  return s.shards;
}

void ParamUnits::gather_all() {
  auto& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  at::NoGradGuard no_grad;
  s.settle();
  const std::int64_t peak = s.whole_peak;
  std::vector<std::pair<std::size_t, PendingWork>> work;
  for (std::size_t k = 0; k < s.shards.size(); ++k) {
    if (s.resident[k]) continue;
    s.allocate(k);
    auto full = s.flat(k);
    work.emplace_back(k, s.pg->all_gather_async(full, s.shards[k], s.label(k)));
    ++s.counters.gathers;
  }
  const auto t = Clock::now();
  for (auto& [k, w] : work) {
    w.wait();
    s.whole[k] = 1;
  }
  s.counters.wait_s += std::chrono::duration<double>(Clock::now() - t).count();
  s.whole_peak = peak;  // the peak of the steps, not of the whole model between them
}

std::int64_t ParamUnits::peak_bytes() const {
  std::int64_t shards = 0;
  for (const auto& t : state_->shards) shards += static_cast<std::int64_t>(t.nbytes());
  return shards + state_->whole_peak;
}

void ParamUnits::reset_peak() {
  state_->whole_peak = state_->whole_now;
}

std::int64_t ParamUnits::resident_bytes() const {
  std::int64_t shards = 0;
  for (const auto& t : state_->shards) shards += static_cast<std::int64_t>(t.nbytes());
  return shards + state_->whole_now;
}

std::int64_t ParamUnits::whole_bytes() const {
  std::int64_t n = 0;
  for (const auto& b : state_->layout.buckets) n += bucket_bytes(b);
  return n;
}

std::int64_t ParamUnits::gathers() const {
  return state_->counters.gathers;
}

UnitCounters ParamUnits::counters() const {
  return state_->counters;
}

ParamUnits::OnDemand::OnDemand(ParamUnits& units, Pass pass) : state_(units.state_.get()) {
  State* expected = nullptr;
  core::require(g_active.compare_exchange_strong(expected, state_),
                "ParamUnits::OnDemand: another unit set gathers on demand already");
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->begin_pass(pass == Pass::step);
  }
  handle_ = at::addThreadLocalCallback(at::RecordFunctionCallback(&on_operation)
                                           .needsInputs(true)
                                           .scopes({at::RecordScope::FUNCTION}));
}

ParamUnits::OnDemand::~OnDemand() {
  at::removeCallback(handle_);
  try {  // a failed gather is reported again by the next collective
    std::lock_guard<std::mutex> lock(state_->mutex);
    at::NoGradGuard no_grad;
    state_->end_pass();
  } catch (const std::exception&) {
  }
  g_active.store(nullptr, std::memory_order_release);
}

}  // namespace clipper::dist
