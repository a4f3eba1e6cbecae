#include "clipper/dist/grad_reducer.hpp"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <map>
#include <mutex>
#include <sstream>
#include <tuple>

#include "clipper/core/error.hpp"
#include "clipper/dist/process_group.hpp"

namespace clipper::dist {

namespace {

struct Bucket {
  std::vector<std::size_t> params;    // indices into State::params
  std::vector<std::int64_t> offsets;  // element offset of each parameter in `flat`
  std::int64_t numel = 0;
  at::ScalarType dtype = at::kFloat;
  at::Device device{at::kCPU};
  at::Tensor flat;
  std::size_t pending = 0;  // gradients still missing this step
  bool launched = false;
  PendingWork work;
  std::string label;
};

// Buckets of at most `bytes` bytes (at least one tensor each), per (dtype, device), tensors taken
// in `order`. Bucket indices follow the order in which buckets are opened.
std::vector<Bucket> make_buckets(const std::vector<at::Tensor>& tensors,
                                 const std::vector<std::size_t>& order, double bucket_mb) {
  const double limit = bucket_mb * 1024.0 * 1024.0;
  std::vector<Bucket> buckets;
  std::map<std::tuple<int, int, int>, std::size_t> open;  // (dtype, device type, index) -> bucket
  for (std::size_t i : order) {
    const auto& t = tensors[i];
    const auto key =
        std::make_tuple(static_cast<int>(t.scalar_type()), static_cast<int>(t.device().type()),
                        static_cast<int>(t.device().index()));
    auto it = open.find(key);
    const double bytes = static_cast<double>(t.numel()) * static_cast<double>(t.element_size());
    if (it != open.end()) {
      auto& b = buckets[it->second];
      const double have = static_cast<double>(b.numel) * static_cast<double>(t.element_size());
      if (have + bytes > limit) {
        open.erase(it);
        it = open.end();
      }
    }
    if (it == open.end()) {
      Bucket b;
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
  for (std::size_t k = 0; k < buckets.size(); ++k) {
    auto& b = buckets[k];
    b.flat = at::zeros({b.numel}, at::TensorOptions().dtype(b.dtype).device(b.device));
    std::ostringstream os;
    os << "gradient all_reduce, bucket " << k + 1 << "/" << buckets.size() << " ("
       << b.params.size() << " tensors, "
       << static_cast<double>(b.numel) * static_cast<double>(b.flat.element_size()) / 1e6 << " MB "
       << c10::toString(b.dtype) << ")";
    b.label = os.str();
  }
  return buckets;
}

}  // namespace

struct GradReducer::State {
  std::vector<at::Tensor> params;
  std::shared_ptr<ProcessGroup> pg;
  bool overlap = false;
  std::vector<Bucket> buckets;
  std::vector<std::size_t> bucket_of;  // param -> bucket
  std::vector<char> ready;             // param got its gradient this step
  std::size_t next_launch = 0;
  std::size_t by_hooks = 0;
  bool armed = false;
  std::mutex mutex;
  // Hooks, kept to remove them again.
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  std::vector<std::uintptr_t> hook_keys;

  void copy_in(Bucket& b) {
    at::NoGradGuard no_grad;
    for (std::size_t j = 0; j < b.params.size(); ++j) {
      const auto& p = params[b.params[j]];
      auto slot = b.flat.narrow(0, b.offsets[j], p.numel());
      const auto& g = p.grad();
      if (g.defined())
        slot.copy_(g.reshape({-1}));
      else
        slot.zero_();
    }
  }

  void launch(std::size_t k) {
    auto& b = buckets[k];
    copy_in(b);
    b.work = pg->all_reduce_async(b.flat, ReduceOp::sum, b.label);
    b.launched = true;
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
    auto& b = buckets[bucket_of[i]];
    if (b.pending > 0) --b.pending;
    launch_ready();
  }

  void reset() {
    for (auto& b : buckets) {
      b.pending = b.params.size();
      b.launched = false;
    }
    std::fill(ready.begin(), ready.end(), 0);
    next_launch = 0;
    armed = false;
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
    : state_(std::make_shared<State>()) {
  auto& s = *state_;
  s.params = std::move(params);
  s.pg = std::move(pg);
  s.overlap = overlap && s.pg->size() > 1;
  if (s.pg->size() == 1) return;
  for (std::size_t i = 0; i < s.params.size(); ++i)
    core::require(
        s.params[i].defined() && s.params[i].requires_grad() && s.params[i].is_leaf(),
        "GradReducer: tensor " + std::to_string(i) + " is not a trainable leaf parameter");
  std::vector<std::size_t> order(s.params.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = order.size() - 1 - i;
  s.buckets = make_buckets(s.params, order, bucket_mb);
  s.bucket_of.assign(s.params.size(), 0);
  for (std::size_t k = 0; k < s.buckets.size(); ++k)
    for (std::size_t i : s.buckets[k].params) s.bucket_of[i] = k;
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
  if (!s.overlap) return;
  std::lock_guard<std::mutex> lock(s.mutex);
  s.reset();
  s.by_hooks = 0;
  s.armed = true;
}

void GradReducer::finish() {
  auto& s = *state_;
  if (s.pg->size() == 1) return;
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.armed) s.by_hooks = 0;
  s.armed = false;
  while (s.next_launch < s.buckets.size()) s.launch(s.next_launch++);
  const double inv = 1.0 / static_cast<double>(s.pg->size());
  at::NoGradGuard no_grad;
  for (auto& b : s.buckets) {
    b.work.wait();
    b.flat.mul_(inv);
    for (std::size_t j = 0; j < b.params.size(); ++j) {
      auto& p = s.params[b.params[j]];
      auto slot = b.flat.narrow(0, b.offsets[j], p.numel()).view(p.sizes());
      if (p.grad().defined())
        p.mutable_grad().copy_(slot);
      else
        p.mutable_grad() = slot.clone();
    }
  }
  s.reset();
}

std::size_t GradReducer::num_buckets() const {
  return state_->buckets.size();
}

std::vector<std::size_t> GradReducer::bucket_bytes() const {
  std::vector<std::size_t> out;
  for (const auto& b : state_->buckets)
    out.push_back(static_cast<std::size_t>(b.numel) * b.flat.element_size());
  return out;
}

std::size_t GradReducer::launched_by_hooks() const {
  return state_->by_hooks;
}

void broadcast_tensors(const std::vector<at::Tensor>& tensors, ProcessGroup& pg, int root,
                       double bucket_mb) {
  if (pg.size() == 1 || tensors.empty()) return;
  at::NoGradGuard no_grad;
  std::vector<std::size_t> order(tensors.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  auto buckets = make_buckets(tensors, order, bucket_mb);
  for (std::size_t k = 0; k < buckets.size(); ++k) {
    auto& b = buckets[k];
    for (std::size_t j = 0; j < b.params.size(); ++j)
      b.flat.narrow(0, b.offsets[j], tensors[b.params[j]].numel())
          .copy_(tensors[b.params[j]].reshape({-1}));
    pg.broadcast(b.flat, root,
                 "broadcast of parameters and buffers, bucket " + std::to_string(k + 1) + "/" +
                     std::to_string(buckets.size()));
    for (std::size_t j = 0; j < b.params.size(); ++j) {
      auto t = tensors[b.params[j]];
      t.copy_(b.flat.narrow(0, b.offsets[j], t.numel()).view(t.sizes()));
    }
  }
}

void broadcast_buffers(const std::vector<at::Tensor>& buffers, ProcessGroup& pg) {
  broadcast_tensors(buffers, pg, 0);
}

}  // namespace clipper::dist
