#include "clipper/dist/grad_reducer.hpp"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <sstream>
#include <tuple>

#include "clipper/core/error.hpp"
#include "clipper/dist/process_group.hpp"

namespace clipper::dist {

namespace {

// The in-flight side of a FlatBucket.
struct Bucket {
  at::Tensor flat;   // the bucket's gradients (ZeRO 2: only between copy-in and reduce-scatter)
  at::Tensor shard;  // ZeRO: this rank's shard of the mean gradient
  std::size_t pending = 0;  // gradients still missing this step
  bool launched = false;
  bool done = false;  // reduce-scatter: waited for, shard averaged (and flat freed)
  PendingWork work;
  std::string label;
};

// Freeing full gradients (free_full_grads): flat buckets allocated at once, at most.
constexpr std::size_t kInFlight = 2;

at::Tensor flat_zeros(const FlatBucket& b, std::int64_t n) {
  return at::zeros({n}, at::TensorOptions().dtype(b.dtype).device(b.device));
}

std::string bucket_label(const FlatBucket& b, std::size_t k, std::size_t n, bool scatter) {
  std::ostringstream os;
  os << "gradient " << (scatter ? "reduce_scatter" : "all_reduce") << ", bucket " << k + 1 << "/"
     << n << " (" << b.params.size() << " tensors, "
     << static_cast<double>(b.padded) * static_cast<double>(c10::elementSize(b.dtype)) / 1e6
     << " MB " << c10::toString(b.dtype) << ")";
  return os.str();
}

}  // namespace

std::vector<std::size_t> reverse_order(std::size_t n) {
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = n - 1 - i;
  return order;
}

FlatLayout make_flat_layout(const std::vector<at::Tensor>& tensors,
                            const std::vector<std::size_t>& order, double bucket_mb,
                            int world_size) {
  const double limit = bucket_mb * 1024.0 * 1024.0;
  FlatLayout layout;
  layout.world_size = world_size;
  auto& buckets = layout.buckets;
  std::map<std::tuple<int, int, int>, std::size_t> open;  // (dtype, device type, index) -> bucket
  for (std::size_t i : order) {
    const auto& t = tensors[i];
    const auto key =
        std::make_tuple(static_cast<int>(t.scalar_type()), static_cast<int>(t.device().type()),
                        static_cast<int>(t.device().index()));
    auto it = open.find(key);
    const double bytes = static_cast<double>(t.numel()) * static_cast<double>(t.element_size());
    if (it != open.end()) {
      const auto& b = buckets[it->second];
      const double have = static_cast<double>(b.numel) * static_cast<double>(t.element_size());
      if (have + bytes > limit) {
        open.erase(it);
        it = open.end();
      }
    }
    if (it == open.end()) {
      FlatBucket b;
      b.dtype = t.scalar_type();
      b.device = t.device();
      buckets.push_back(std::move(b));
      it = open.emplace(key, buckets.size() - 1).first;
    }
    auto& b = buckets[it->second];
    b.params.push_back(i);
    b.offsets.push_back(b.numel);
    b.numel += t.numel();
  }
  for (auto& b : buckets) b.padded = (b.numel + world_size - 1) / world_size * world_size;
  return layout;
}

std::vector<FlatSegment> FlatLayout::segments(std::size_t bucket, int rank) const {
  const auto& b = buckets[bucket];
  const std::int64_t s = shard_numel(bucket), lo = rank * s, hi = lo + s;
  std::vector<FlatSegment> out;
  for (std::size_t j = 0; j < b.params.size(); ++j) {
    const std::int64_t n =
        j + 1 < b.params.size() ? b.offsets[j + 1] - b.offsets[j] : b.numel - b.offsets[j];
    const std::int64_t a = std::max(lo, b.offsets[j]), e = std::min(hi, b.offsets[j] + n);
    if (e > a) out.push_back({b.params[j], a - b.offsets[j], a - lo, e - a});
  }
  return out;
}

struct GradReducer::State {
  std::vector<at::Tensor> params;
  std::shared_ptr<ProcessGroup> pg;
  bool overlap = false;
  bool scatter = false;     // reduce-scatter into shards (else all-reduce)
  bool free_grads = false;  // free each full gradient once in its bucket
  FlatLayout layout;
  std::vector<Bucket> buckets;
  std::vector<at::Tensor> shards;      // ZeRO: buckets[k].shard, for grad_shards()
  std::vector<std::size_t> bucket_of;  // param -> bucket
  std::vector<char> ready;             // param got its gradient this step
  std::size_t next_launch = 0;
  std::size_t by_hooks = 0;
  bool armed = false;
  std::mutex mutex;
  // Hooks, kept to remove them again.
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  std::vector<std::uintptr_t> hook_keys;
  // Gradient bytes: `held` all along (buckets kept between steps, shards); `live` during a step
  // adds the full gradients and the buckets in use; `peak` its most since begin_step().
  std::int64_t held = 0, live = 0, peak = 0;
  std::vector<char> counted;  // param: its full gradient is in `live`

  std::int64_t grad_bytes(std::size_t i) const {
    return params[i].numel() * static_cast<std::int64_t>(params[i].element_size());
  }
  static std::int64_t bytes(const at::Tensor& t) { return static_cast<std::int64_t>(t.nbytes()); }
  void add(std::int64_t b) {
    live += b;
    peak = std::max(peak, live);
  }
  void count_grad(std::size_t i) {
    if (counted[i] || !params[i].grad().defined()) return;
    counted[i] = 1;
    add(grad_bytes(i));
  }
  void uncount_grad(std::size_t i) {
    if (!counted[i]) return;
    counted[i] = 0;
    live -= grad_bytes(i);
  }
  void count_all_grads() {
    for (std::size_t i = 0; i < params.size(); ++i) count_grad(i);
  }

  // free_grads: each full gradient is freed here, once its values are in the bucket.
  void copy_in(std::size_t k) {
    at::NoGradGuard no_grad;
    const auto& spec = layout.buckets[k];
    auto& b = buckets[k];
    if (!b.flat.defined()) {
      b.flat = flat_zeros(spec, spec.padded);
      add(bytes(b.flat));
    }
    for (std::size_t j = 0; j < spec.params.size(); ++j) {
      auto& p = params[spec.params[j]];
      auto slot = b.flat.narrow(0, spec.offsets[j], p.numel());
      count_grad(spec.params[j]);
      const auto& g = p.grad();
      if (g.defined())
        slot.copy_(g.reshape({-1}));
      else
        slot.zero_();
      if (!free_grads) continue;
      p.mutable_grad() = at::Tensor();
      uncount_grad(spec.params[j]);
    }
  }

  void launch(std::size_t k) {
    // Freeing: at most kInFlight flat buckets at once, the oldest waited for first.
    if (free_grads && k >= kInFlight) complete(k - kInFlight);
    auto& b = buckets[k];
    copy_in(k);
    b.work = scatter ? pg->reduce_scatter_async(b.shard, b.flat, b.label)
                     : pg->all_reduce_async(b.flat, ReduceOp::sum, b.label);
    b.launched = true;
  }

  // Reduce-scatter: waits for bucket k, averages its shard and, freeing, frees its flat buffer.
  void complete(std::size_t k) {
    auto& b = buckets[k];
    if (b.done) return;
    b.work.wait();
    b.shard.mul_(1.0 / static_cast<double>(pg->size()));
    b.done = true;
    if (!free_grads) return;
    live -= bytes(b.flat);
    b.flat = at::Tensor();
  }

  // Launches, in bucket order, every bucket whose gradients are complete. Holds `mutex`.
  void launch_ready() {
    while (next_launch < buckets.size() && buckets[next_launch].pending == 0) {
      launch(next_launch++);
      ++by_hooks;
    }
  }

  void on_grad_ready(std::size_t i) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!armed) return;
    if (ready[i]) {
      throw core::Error(
          "GradReducer: parameter " + std::to_string(i) +
          " received a second gradient after begin_step(); call begin_step() only before the "
          "last backward pass of a step");
    }
    ready[i] = 1;
    count_grad(i);
    auto& b = buckets[bucket_of[i]];
    if (b.pending > 0) --b.pending;
    launch_ready();
  }

  void reset() {
    for (std::size_t k = 0; k < buckets.size(); ++k) {
      buckets[k].pending = layout.buckets[k].params.size();
      buckets[k].launched = false;
      buckets[k].done = false;
    }
    std::fill(ready.begin(), ready.end(), 0);
    next_launch = 0;
    armed = false;
  }

  // The mean gradient back into every parameter's .grad() (all-reduce).
  void write_back(std::size_t k) {
    const auto& spec = layout.buckets[k];
    auto& flat = buckets[k].flat;
    for (std::size_t j = 0; j < spec.params.size(); ++j) {
      auto& p = params[spec.params[j]];
      auto slot = flat.narrow(0, spec.offsets[j], p.numel()).view(p.sizes());
      if (p.grad().defined())
        p.mutable_grad().copy_(slot);
      else
        p.mutable_grad() = slot.clone();
    }
  }

  void make_buckets(double bucket_mb, std::optional<FlatLayout> given) {
    layout = given ? std::move(*given)
                   : make_flat_layout(params, reverse_order(params.size()), bucket_mb,
                                      scatter ? pg->size() : 1);
    buckets.resize(layout.buckets.size());
    bucket_of.assign(params.size(), 0);
    for (std::size_t k = 0; k < buckets.size(); ++k) {
      const auto& spec = layout.buckets[k];
      for (std::size_t i : spec.params) bucket_of[i] = k;
      buckets[k].label = bucket_label(spec, k, buckets.size(), scatter);
      if (!free_grads) {
        buckets[k].flat = flat_zeros(spec, spec.padded);
        held += bytes(buckets[k].flat);
      }
      if (scatter) {
        buckets[k].shard = flat_zeros(spec, layout.shard_numel(k));
        shards.push_back(buckets[k].shard);
        held += bytes(buckets[k].shard);
      }
    }
  }
};

namespace {

class ReadyHook : public torch::autograd::FunctionPostHook {
 public:
  ReadyHook(std::weak_ptr<GradReducer::State> state, std::size_t index)
      : state_(std::move(state)), index_(index) {}
  torch::autograd::variable_list operator()(
      const torch::autograd::variable_list& outputs,
      const torch::autograd::variable_list& /*inputs*/) override {
    if (auto s = state_.lock()) s->on_grad_ready(index_);
    return outputs;
  }

 private:
  std::weak_ptr<GradReducer::State> state_;
  std::size_t index_;
};

}  // namespace

GradReducer::GradReducer(std::vector<at::Tensor> params, std::shared_ptr<ProcessGroup> pg,
                         double bucket_mb, bool overlap)
    : GradReducer(std::move(params), std::move(pg), reducer_options(bucket_mb, overlap)) {}

GradReducer::GradReducer(std::vector<at::Tensor> params, std::shared_ptr<ProcessGroup> pg,
                         ReducerOptions options)
    : state_(std::make_shared<State>()) {
  auto& s = *state_;
  s.params = std::move(params);
  s.pg = std::move(pg);
  s.scatter = options.reduce == GradReduce::reduce_scatter;
  s.free_grads = s.scatter && options.free_full_grads;
  core::require(s.scatter || !options.layout,
                "GradReducer: a given bucket layout needs reduce_scatter");
  s.overlap = options.overlap && s.pg->size() > 1;
  s.counted.assign(s.params.size(), 0);
  // One process needs no buckets, unless reduce-scatter wants its (single) shard.
  if (s.pg->size() == 1 && !s.scatter) return;
  for (std::size_t i = 0; i < s.params.size(); ++i)
    core::require(
        s.params[i].defined() && s.params[i].requires_grad() && s.params[i].is_leaf(),
        "GradReducer: tensor " + std::to_string(i) + " is not a trainable leaf parameter");
  s.make_buckets(options.bucket_mb, std::move(options.layout));
  s.ready.assign(s.params.size(), 0);
  s.reset();
  if (s.overlap) {
    for (std::size_t i = 0; i < s.params.size(); ++i) {
      auto acc = torch::autograd::impl::grad_accumulator(s.params[i]);
      s.hook_keys.push_back(acc->add_post_hook(std::make_unique<ReadyHook>(state_, i)));
      s.accumulators.push_back(std::move(acc));
    }
  }
}

GradReducer::~GradReducer() {
  auto& s = *state_;
  for (std::size_t i = 0; i < s.accumulators.size(); ++i)
    s.accumulators[i]->del_post_hook(s.hook_keys[i]);
}

void GradReducer::begin_step() {
  auto& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  s.live = s.peak = s.held;
  std::fill(s.counted.begin(), s.counted.end(), 0);
  s.count_all_grads();  // accumulated by earlier micro-batches
  if (!s.overlap) return;
  s.reset();
  s.by_hooks = 0;
  s.armed = true;
}

void GradReducer::finish() {
  auto& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  s.count_all_grads();  // all there before the buckets not launched yet are copied
  if (s.buckets.empty()) return;
  if (!s.armed) s.by_hooks = 0;
  s.armed = false;
  while (s.next_launch < s.buckets.size()) s.launch(s.next_launch++);
  const double inv = 1.0 / static_cast<double>(s.pg->size());
  at::NoGradGuard no_grad;
  for (std::size_t k = 0; k < s.buckets.size(); ++k) {
    if (s.scatter) {
      s.complete(k);
      continue;
    }
    auto& b = s.buckets[k];
    b.work.wait();
    b.flat.mul_(inv);
    s.write_back(k);
  }
  s.reset();
}

std::size_t GradReducer::num_buckets() const {
  return state_->buckets.size();
}

std::vector<std::size_t> GradReducer::bucket_bytes() const {
  std::vector<std::size_t> out;
  for (const auto& b : state_->layout.buckets)
    out.push_back(static_cast<std::size_t>(b.padded) * c10::elementSize(b.dtype));
  return out;
}

std::int64_t GradReducer::peak_gradient_bytes() const {
  return state_->peak;
}

std::size_t GradReducer::launched_by_hooks() const {
  return state_->by_hooks;
}

const FlatLayout& GradReducer::layout() const {
  return state_->layout;
}

const std::vector<at::Tensor>& GradReducer::grad_shards() const {
  return state_->shards;
}

std::vector<at::Tensor> GradReducer::param_shards() const {
  const auto& s = *state_;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> out;
  for (std::size_t k = 0; k < s.layout.buckets.size(); ++k) {
    auto shard = flat_zeros(s.layout.buckets[k], s.layout.shard_numel(k));
    for (const auto& g : s.layout.segments(k, s.pg->rank()))
      shard.narrow(0, g.shard_offset, g.numel)
          .copy_(s.params[g.param].detach().reshape({-1}).narrow(0, g.param_offset, g.numel));
    out.push_back(std::move(shard));
  }
  return out;
}

void GradReducer::all_gather_params(const std::vector<at::Tensor>& shards) {
  auto& s = *state_;
  core::require(shards.size() == s.buckets.size(),
                "GradReducer::all_gather_params: one shard per bucket expected");
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> full(s.buckets.size());
  std::vector<PendingWork> work(s.buckets.size());
  for (std::size_t k = 0; k < s.buckets.size(); ++k) {
    const auto& spec = s.layout.buckets[k];
    // Without free_grads: the bucket's gradient buffer is reused, dead since the reduce-scatter.
    full[k] = s.buckets[k].flat.defined() ? s.buckets[k].flat : flat_zeros(spec, spec.padded);
    work[k] = s.pg->all_gather_async(full[k], shards[k],
                                     "parameter all_gather, bucket " + std::to_string(k + 1) + "/" +
                                         std::to_string(s.buckets.size()));
  }
  for (std::size_t k = 0; k < s.buckets.size(); ++k) {
    work[k].wait();
    const auto& spec = s.layout.buckets[k];
    for (std::size_t j = 0; j < spec.params.size(); ++j) {
      auto p = s.params[spec.params[j]].detach();
      p.copy_(full[k].narrow(0, spec.offsets[j], p.numel()).view(p.sizes()));
    }
  }
}

void broadcast_tensors(const std::vector<at::Tensor>& tensors, ProcessGroup& pg, int root,
                       double bucket_mb) {
  if (pg.size() == 1 || tensors.empty()) return;
  at::NoGradGuard no_grad;
  std::vector<std::size_t> order(tensors.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  const auto layout = make_flat_layout(tensors, order, bucket_mb, 1);
  for (std::size_t k = 0; k < layout.buckets.size(); ++k) {
    const auto& b = layout.buckets[k];
    auto flat = flat_zeros(b, b.numel);
    for (std::size_t j = 0; j < b.params.size(); ++j)
      flat.narrow(0, b.offsets[j], tensors[b.params[j]].numel())
          .copy_(tensors[b.params[j]].reshape({-1}));
    pg.broadcast(flat, root,
                 "broadcast of parameters and buffers, bucket " + std::to_string(k + 1) + "/" +
                     std::to_string(layout.buckets.size()));
    for (std::size_t j = 0; j < b.params.size(); ++j) {
      auto t = tensors[b.params[j]];
      t.copy_(flat.narrow(0, b.offsets[j], t.numel()).view(t.sizes()));
    }
  }
}

void broadcast_buffers(const std::vector<at::Tensor>& buffers, ProcessGroup& pg) {
  broadcast_tensors(buffers, pg, 0);
}

}  // namespace clipper::dist
