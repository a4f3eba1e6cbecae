#include "clipper/bench/bench_loss.hpp"

#include <ATen/ATen.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>

#include "clipper/dist/process_group.hpp"
#include "clipper/dist/world.hpp"
#include "clipper/loss/contrastive_loss.hpp"

namespace clipper::bench {

namespace {

// Wraps LibTorch's CPU allocator and counts the bytes of live CPU tensors: what a rank's loss
// holds at its peak, independent of malloc's caching (peak RSS would hide frees and reuse).
class CountingCpuAllocator final : public c10::Allocator {
 public:
  explicit CountingCpuAllocator(c10::Allocator* base) : base_(base) {}

  c10::DataPtr allocate(std::size_t n) override {
    auto* ctx = new Block{base_->allocate(n), n, this};
    const auto now = live_.fetch_add(static_cast<std::int64_t>(n)) + static_cast<std::int64_t>(n);
    auto peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
    }
    return {ctx->inner.get(), ctx, &CountingCpuAllocator::release, c10::Device(c10::kCPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  std::int64_t live() const { return live_.load(); }
  std::int64_t peak() const { return peak_.load(); }
  void reset_peak() { peak_.store(live_.load()); }

 private:
  struct Block {
    c10::DataPtr inner;
    std::size_t n;
    CountingCpuAllocator* owner;
  };
  static void release(void* p) {
    auto* b = static_cast<Block*>(p);
    b->owner->live_.fetch_sub(static_cast<std::int64_t>(b->n));
    delete b;
  }

  c10::Allocator* base_;
  std::atomic<std::int64_t> live_{0}, peak_{0};
};

CountingCpuAllocator& counting_allocator() {
  // Never destroyed: tensors freed at exit still call back into it.
  static auto* a = new CountingCpuAllocator(c10::GetCPUAllocator());
  static const bool installed = (c10::SetCPUAllocator(a, /*priority=*/100), true);
  (void)installed;
  return *a;
}

std::string form_of(const config::LossConfig& c) {
  std::string f = c.kind == config::LossKind::siglip ? "siglip" : "clip";
  if (c.chunked) return f + " chunked";
  if (c.kind == config::LossKind::siglip)
    return f + (c.siglip_exchange == config::SiglipExchange::neighbour ? " neighbour" : " gather");
  return f + (c.local_loss ? " local" : " full");
}

}  // namespace

std::string LossBenchResult::to_text() const {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "bench loss: %s, world %lld, batch %lld per rank, dim %lld: peak %.2f MiB "
                "(%lld bytes) above the features, %.2f ms per forward + backward\n",
                form.c_str(), static_cast<long long>(world_size), static_cast<long long>(batch),
                static_cast<long long>(dim), static_cast<double>(peak_bytes) / (1 << 20),
                static_cast<long long>(peak_bytes), step_ms);
  return buf;
}

LossBenchResult bench_loss(const LossBenchOptions& o) {
  auto& counter = counting_allocator();
  config::DistConfig dcfg;
  const auto pg = dist::ProcessGroup::create(dist::discover_world(dcfg), dcfg, /*cuda=*/false);
  const auto loss_fn = loss::make_loss(o.loss, pg);
  at::manual_seed(17 + pg->rank());
  auto unit = [&] {
    auto x = at::randn({o.batch, o.dim});
    return (x / x.norm(2, {1}, true)).requires_grad_(true);
  };
  auto img = unit(), txt = unit();
  auto scale = at::full({}, 14.0).requires_grad_(true),
       bias = at::full({}, -10.0).requires_grad_(true);
  std::int64_t peak = 0;
  double seconds = 0;
  for (std::int64_t i = 0; i < o.steps; ++i) {
    for (auto* t : {&img, &txt, &scale, &bias}) t->mutable_grad() = at::Tensor();
    pg->barrier("bench loss: step start");
    const auto base = counter.live();
    counter.reset_peak();
    const auto t0 = std::chrono::steady_clock::now();
    loss_fn->forward(img, txt, scale, bias).backward();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    peak = std::max(peak, counter.peak() - base);
  }
  LossBenchResult r;
  r.form = form_of(o.loss);
  r.world_size = pg->size();
  r.rank = pg->rank();
  r.batch = o.batch;
  r.dim = o.dim;
  r.peak_bytes = pg->all_reduce_max_int(peak);
  r.step_ms = 1e3 * seconds / static_cast<double>(std::max<std::int64_t>(o.steps, 1));
  return r;
}

}  // namespace clipper::bench
