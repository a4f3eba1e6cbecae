#include "clipper/dist/param_units.hpp"

#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <atomic>
#include <list>
#include <map>
#include <mutex>
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
    units.push_back(!blocks[i].empty() ? blocks[i] : in_tower ? first_component(n) : "");
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

struct ParamUnits::State {
  std::vector<at::Tensor> params;
  std::shared_ptr<ProcessGroup> pg;
  std::size_t max_gathered = 2;
  FlatLayout layout;
  std::vector<std::string> names;     // per unit, for collective labels
  std::vector<c10::Storage> storage;  // per unit: the storage its parameters view
  std::vector<at::Tensor> shards;
  std::vector<char> whole;
  std::list<std::size_t> lru;  // whole units, least recently used first
  std::unordered_map<const c10::StorageImpl*, std::size_t> unit_of;
  std::int64_t whole_now = 0, whole_peak = 0, gathers = 0;
  std::mutex mutex;

  at::TensorOptions options(std::size_t k) const {
    return at::TensorOptions().dtype(layout.buckets[k].dtype).device(layout.buckets[k].device);
  }

  // The unit's buffer as one tensor (a new tensor on the same storage: the parameters' version
  // counters are not touched).
  at::Tensor flat(std::size_t k) const {
    return at::empty({0}, options(k)).set_(storage[k], 0, {layout.buckets[k].padded}, {1});
  }

  void make_unit(std::size_t k) {
    const auto& b = layout.buckets[k];
    at::Tensor buffer = at::zeros({b.padded}, options(k));
    for (std::size_t j = 0; j < b.params.size(); ++j) {
      auto& p = params[b.params[j]];
      auto view = buffer.narrow(0, b.offsets[j], p.numel());
      view.copy_(p.detach().reshape({-1}));
      p.set_data(view.view(p.sizes()));
    }
    storage.push_back(buffer.storage());
    unit_of[storage.back().unsafeGetStorageImpl()] = k;
    shards.push_back(at::zeros({layout.shard_numel(k)}, options(k)));
    whole.push_back(1);
    lru.push_back(k);
    whole_now += bucket_bytes(b);
  }

  void allocate(std::size_t k) {
    auto* impl = storage[k].unsafeGetStorageImpl();
    const auto bytes = static_cast<std::size_t>(bucket_bytes(layout.buckets[k]));
    impl->set_data_ptr_noswap(impl->allocator()->allocate(bytes));
    impl->set_nbytes(bytes);
  }

  void free(std::size_t k) {
    auto* impl = storage[k].unsafeGetStorageImpl();
    impl->set_data_ptr_noswap(at::DataPtr(nullptr, layout.buckets[k].device));
    impl->set_nbytes(0);
    whole[k] = 0;
    lru.remove(k);
    whole_now -= bucket_bytes(layout.buckets[k]);
  }

  void mark_whole(std::size_t k) {
    whole[k] = 1;
    lru.push_back(k);
    whole_now += bucket_bytes(layout.buckets[k]);
    whole_peak = std::max(whole_peak, whole_now);
    ++gathers;
  }

  std::string label(std::size_t k) const {
    return "parameter all_gather, unit " + std::to_string(k + 1) + "/" +
           std::to_string(layout.buckets.size()) + " '" + names[k] + "'";
  }

  void gather(std::size_t k) {
    allocate(k);
    at::Tensor full = flat(k);
    pg->all_gather_async(full, shards[k], label(k)).wait();
    mark_whole(k);
  }

  // Frees least recently used units (none of `keep`) until one more fits.
  void make_room(const std::vector<std::size_t>& keep) {
    while (lru.size() + 1 > max_gathered) {
      auto it = std::find_if(lru.begin(), lru.end(), [&](std::size_t k) {
        return std::find(keep.begin(), keep.end(), k) == keep.end();
      });
      if (it == lru.end()) return;
      free(*it);
    }
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
    for (std::size_t k : used) {
      if (whole[k]) {
        lru.remove(k);
        lru.push_back(k);
        continue;
      }
      make_room(used);
      gather(k);
    }
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
                       std::shared_ptr<ProcessGroup> pg, int max_gathered)
    : state_(std::make_shared<State>()) {
  auto& s = *state_;
  core::require(max_gathered >= 1, "ParamUnits: max_gathered must be at least 1");
  s.params = std::move(params);
  s.pg = std::move(pg);
  s.max_gathered = static_cast<std::size_t>(max_gathered);
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
  for (std::size_t k = 0; k < s.shards.size(); ++k) {
    if (!s.whole[k]) continue;
    const std::int64_t n = s.layout.shard_numel(k);
    s.shards[k].copy_(s.flat(k).narrow(0, s.pg->rank() * n, n));
    s.free(k);
  }
  s.whole_peak = 0;
}

void ParamUnits::gather_all() {
  auto& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  at::NoGradGuard no_grad;
  std::vector<PendingWork> work;
  std::vector<at::Tensor> full;
  for (std::size_t k = 0; k < s.shards.size(); ++k) {
    if (s.whole[k]) s.free(k);  // stale: gathered before the optimizer step
    s.allocate(k);
    full.push_back(s.flat(k));
    work.push_back(s.pg->all_gather_async(full.back(), s.shards[k], s.label(k)));
  }
  const std::int64_t peak = s.whole_peak;
  for (std::size_t k = 0; k < work.size(); ++k) {
    work[k].wait();
    s.mark_whole(k);
  }
  s.whole_peak = peak;  // the peak of the step, not of the whole model between steps
}

std::int64_t ParamUnits::peak_bytes() const {
  std::int64_t shards = 0;
  for (const auto& t : state_->shards) shards += static_cast<std::int64_t>(t.nbytes());
  return shards + state_->whole_peak;
}

std::int64_t ParamUnits::whole_bytes() const {
  std::int64_t n = 0;
  for (const auto& b : state_->layout.buckets) n += bucket_bytes(b);
  return n;
}

std::int64_t ParamUnits::gathers() const {
  return state_->gathers;
}

ParamUnits::OnDemand::OnDemand(ParamUnits& units) {
  State* expected = nullptr;
  core::require(g_active.compare_exchange_strong(expected, units.state_.get()),
                "ParamUnits::OnDemand: another unit set gathers on demand already");
  handle_ = at::addThreadLocalCallback(at::RecordFunctionCallback(&on_operation)
                                           .needsInputs(true)
                                           .scopes({at::RecordScope::FUNCTION}));
}

ParamUnits::OnDemand::~OnDemand() {
  at::removeCallback(handle_);
  g_active.store(nullptr, std::memory_order_release);
}

}  // namespace clipper::dist
