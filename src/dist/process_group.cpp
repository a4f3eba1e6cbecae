#include "clipper/dist/process_group.hpp"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstring>
#include <functional>
#include <iomanip>
#include <sstream>

#include "backends.hpp"
#include "clipper/config/config.hpp"
#include "clipper/core/log.hpp"

namespace clipper::dist {

using Clock = std::chrono::steady_clock;

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  double timeout_s = 0;
  std::uint64_t p2p_tag = 0;
};

namespace {
std::uint64_t bytes_of(const at::Tensor& t) {
  return static_cast<std::uint64_t>(t.numel()) * t.element_size();
}
}  // namespace

struct PendingWork::Impl {
  c10::intrusive_ptr<c10d::Work> work;  // null when the work needs no wait (coalesced into another)
  std::string what;                     // "rank 1/2 (gloo): all_reduce ..."
  double timeout_s = 0;
  Clock::time_point start = Clock::now();
  std::function<void()> after;  // runs once the work succeeded (copies results back)
};

namespace {

std::string reason_of(const std::exception& e) {
  if (const auto* ce = dynamic_cast<const c10::Error*>(&e)) return ce->what_without_backtrace();
  return e.what();
}

std::string seconds(double s) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1) << s << " s";
  return os.str();
}

[[noreturn]] void fail(const std::string& what, Clock::time_point start, double timeout_s,
                       const std::exception& e) {
  const double took = std::chrono::duration<double>(Clock::now() - start).count();
  throw DistError(what + " failed after " + seconds(took) + " (timeout " + seconds(timeout_s) +
                  "; a peer may have died or stopped answering, see its log): " + reason_of(e));
}

c10d::ReduceOp to_c10d(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return c10d::ReduceOp::SUM;
    case ReduceOp::max:
      return c10d::ReduceOp::MAX;
    case ReduceOp::min:
      return c10d::ReduceOp::MIN;
  }
  return c10d::ReduceOp::SUM;
}

std::chrono::milliseconds to_ms(double s) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(s * 1000.0));
}

}  // namespace

void PendingWork::wait() {
  if (!impl_) return;
  const auto impl = std::move(impl_);
  impl_.reset();
  try {
    if (impl->work) impl->work->wait();
  } catch (const std::exception& e) {
    fail(impl->what, impl->start, impl->timeout_s, e);
  }
  if (impl->after) impl->after();
}

ProcessGroup::ProcessGroup() = default;

ProcessGroup::~ProcessGroup() {
  if (impl_ && impl_->backend && backend_name_ == "nccl") {
    try {
      impl_->backend->shutdown();
    } catch (...) {
    }
  }
}

std::string ProcessGroup::describe() const {
  return "rank " + std::to_string(rank()) + "/" + std::to_string(size()) + " (" + backend_name_ +
         ")";
}

namespace {

// dist.backend resolved for this run: auto is NCCL with CUDA, Gloo without.
std::string backend_for(const config::DistConfig& cfg, bool use_cuda) {
  std::string backend = config::name_of(cfg.backend);
  if (cfg.backend == config::Backend::automatic) backend = use_cuda ? "nccl" : "gloo";
  if (backend == "nccl" && !use_cuda)
    throw core::InputError(
        "dist.backend=nccl needs CUDA, but this run uses the CPU: use dist.backend=gloo or auto");
  if (backend == "nccl" && !detail::nccl_compiled())
    throw core::InputError(
        "dist.backend=nccl: this clipper was built without the NCCL headers; use "
        "dist.backend=gloo");
  return backend;
}

std::string rendezvous_address(const World& world) {
  return world.world_size <= 1 ? std::string("an in-process store")
                               : world.master_addr + ":" + std::to_string(world.master_port);
}

// The rendezvous store: an in-process one for a one-rank group, else the TCP store at
// MASTER_ADDR:MASTER_PORT (rank 0 serves it unless the launcher's agent does).
c10::intrusive_ptr<c10d::Store> open_store(const World& world, double timeout_s) {
  if (world.world_size <= 1)
    return c10::make_intrusive<c10d::PrefixStore>(world.store_prefix,
                                                  c10::make_intrusive<c10d::HashStore>());
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(world.master_port);
  so.isServer = world.rank == 0 && !world.agent_store;
  // As torch.distributed does: every rank counts itself in, the server waits for all of them.
  so.numWorkers = static_cast<std::size_t>(world.world_size);
  so.waitWorkers = true;
  so.timeout = to_ms(timeout_s);
  CLIPPER_DEBUG("dist: " << world.describe() << " rendezvous at " << rendezvous_address(world)
                         << (so.isServer ? " (serving)" : ""));
  auto tcp = c10::make_intrusive<c10d::TCPStore>(world.master_addr, so);
  return c10::make_intrusive<c10d::PrefixStore>(world.store_prefix, tcp);
}

struct Connection {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
};

// The rendezvous, then the backend's connection to the other ranks; each failure names its stage
// (`who` is the group's description) and the time it took.
Connection connect(const World& world, const config::DistConfig& cfg, const std::string& backend,
                   int cuda_index, const std::string& who, Clock::time_point start) {
  Connection c;
  try {
    c.store = open_store(world, cfg.start_timeout_s);
  } catch (const std::exception& e) {
    fail(who + ": rendezvous at " + rendezvous_address(world) + " (" + world.source + " variables)",
         start, cfg.start_timeout_s, e);
  }
  try {
    c.backend = backend == "nccl"
                    ? detail::make_nccl_backend(c.store, world, to_ms(cfg.timeout_s), cuda_index)
                    : detail::make_gloo_backend(c.store, world, to_ms(cfg.start_timeout_s));
  } catch (const std::exception& e) {
    fail(who + ": connecting to the other ranks", start, cfg.start_timeout_s, e);
  }
  return c;
}

}  // namespace

std::shared_ptr<ProcessGroup> ProcessGroup::create(const World& world,
                                                   const config::DistConfig& cfg, bool use_cuda) {
  auto pg = std::make_shared<ProcessGroup>();
  pg->world_ = world;
  // One process and dist.backend auto: no backend at all (collectives are the identity). One
  // process and an explicit backend: a real one-rank group of that backend (the GPU check runs
  // NCCL this way), with an in-process store instead of a rendezvous.
  if (world.world_size <= 1 && cfg.backend == config::Backend::automatic) {
    if (use_cuda)
      pg->device_ = at::Device(
          at::kCUDA, static_cast<c10::DeviceIndex>(detail::select_cuda_device(world.local_rank)));
    return pg;
  }
  const std::string backend = backend_for(cfg, use_cuda);
  pg->backend_name_ = backend;
  const int cuda_index = backend == "nccl" ? detail::select_cuda_device(world.local_rank) : -1;
  pg->device_ = backend == "nccl" ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(cuda_index))
                                  : at::Device(at::kCPU);
  pg->impl_ = std::make_unique<Impl>();
  pg->impl_->timeout_s = cfg.start_timeout_s;
  const auto start = Clock::now();
  auto connection = connect(world, cfg, backend, cuda_index, pg->describe(), start);
  pg->impl_->store = std::move(connection.store);
  pg->impl_->backend = std::move(connection.backend);
  // The first collective proves every rank is there (and creates NCCL's communicator).
  const auto check = pg->all_reduce_int(1, ReduceOp::sum, "start-up check");
  if (check != world.world_size)
    throw DistError(pg->describe() + ": start-up check counted " + std::to_string(check) +
                    " ranks, expected " + std::to_string(world.world_size));
  pg->set_timeout(cfg.timeout_s);
  CLIPPER_INFO("dist: " << world.describe() << " joined " << backend << " group via "
                        << rendezvous_address(world) << " (" << world.source << ") in "
                        << seconds(std::chrono::duration<double>(Clock::now() - start).count()));
  return pg;
}

void ProcessGroup::set_timeout(double s) {
  if (!impl_ || impl_->timeout_s == s) return;
  impl_->timeout_s = s;
  impl_->backend->setTimeout(to_ms(s));
}

double ProcessGroup::timeout() const {
  return impl_ ? impl_->timeout_s : 0.0;
}

namespace {

// Launches `launch` under the error wrapper and packages the work.
template <class F>
PendingWork start_work(const std::string& what, double timeout_s, F&& launch,
                       std::function<void()> after = {}) {
  auto impl = std::make_shared<PendingWork::Impl>();
  impl->what = what;
  impl->timeout_s = timeout_s;
  impl->after = std::move(after);
  try {
    impl->work = launch();
  } catch (const std::exception& e) {
    fail(what, impl->start, timeout_s, e);
  }
  return PendingWork(impl);
}

}  // namespace

PendingWork ProcessGroup::all_reduce_async(at::Tensor& t, ReduceOp op, const std::string& what) {
  if (!impl_) return {};
  payload_.all_reduce += bytes_of(t);
  at::Tensor target = t;
  at::Tensor work_t = t.device() == device_ && t.is_contiguous() ? t : t.to(device_).contiguous();
  std::function<void()> after;
  if (!work_t.is_same(t)) after = [target, work_t]() mutable { target.copy_(work_t); };
  c10d::AllreduceOptions o;
  o.reduceOp = to_c10d(op);
  auto backend = impl_->backend;
  return start_work(
      describe() + ": " + what, impl_->timeout_s,
      [&] {
        std::vector<at::Tensor> v{work_t};
        return backend->allreduce(v, o);
      },
      std::move(after));
}

void ProcessGroup::all_reduce(at::Tensor& t, ReduceOp op, const std::string& what) {
  if (!impl_) return;
  all_reduce_async(t, op, what).wait();
}

void ProcessGroup::broadcast(at::Tensor& t, int root, const std::string& what) {
  if (!impl_) return;
  payload_.broadcast += bytes_of(t);
  at::Tensor target = t;
  at::Tensor work_t = t.device() == device_ && t.is_contiguous() ? t : t.to(device_).contiguous();
  std::function<void()> after;
  if (!work_t.is_same(t)) after = [target, work_t]() mutable { target.copy_(work_t); };
  c10d::BroadcastOptions o;
  o.rootRank = root;
  auto backend = impl_->backend;
  start_work(
      describe() + ": " + what + " from rank " + std::to_string(root), impl_->timeout_s,
      [&] {
        std::vector<at::Tensor> v{work_t};
        return backend->broadcast(v, o);
      },
      std::move(after))
      .wait();
}

at::Tensor ProcessGroup::all_gather(const at::Tensor& t, const std::string& what) {
  if (!impl_) return t;
  payload_.all_gather += bytes_of(t);
  at::Tensor in = t.to(device_).contiguous();
  auto sizes = in.sizes().vec();
  TORCH_CHECK(!sizes.empty(), "all_gather needs a tensor with at least one dimension");
  sizes[0] *= size();
  at::Tensor out = at::empty(sizes, in.options());
  auto backend = impl_->backend;
  start_work(describe() + ": " + what + " " + std::to_string(size()) + " x " +
                 std::to_string(t.numel()) + " values",
             impl_->timeout_s, [&] { return backend->_allgather_base(out, in); })
      .wait();
  return out.device() == t.device() ? out : out.to(t.device());
}

at::Tensor ProcessGroup::reduce_scatter_sum(const at::Tensor& t, const std::string& what) {
  if (!impl_) return t;
  payload_.reduce_scatter += bytes_of(t);
  TORCH_CHECK(t.dim() > 0 && t.size(0) % size() == 0, "reduce_scatter_sum: the first dimension (",
              t.size(0), ") is not a multiple of the world size (", size(), ")");
  at::Tensor in = t.to(device_).contiguous();
  auto sizes = in.sizes().vec();
  sizes[0] /= size();
  at::Tensor out = at::empty(sizes, in.options());
  c10d::ReduceScatterOptions o;
  o.reduceOp = c10d::ReduceOp::SUM;
  auto backend = impl_->backend;
  start_work(describe() + ": " + what, impl_->timeout_s, [&] {
    return backend->_reduce_scatter_base(out, in, o);
  }).wait();
  return out.device() == t.device() ? out : out.to(t.device());
}

PendingWork ProcessGroup::reduce_scatter_async(at::Tensor& out, const at::Tensor& in,
                                               const std::string& what) {
  TORCH_CHECK(in.numel() == out.numel() * size(), "reduce_scatter_async: ", in.numel(),
              " values in, ", out.numel(), " out, world size ", size());
  if (!impl_) {
    out.copy_(in);
    return {};
  }
  payload_.reduce_scatter += bytes_of(in);
  c10d::ReduceScatterOptions o;
  o.reduceOp = c10d::ReduceOp::SUM;
  auto backend = impl_->backend;
  at::Tensor src = in;
  return start_work(describe() + ": " + what, impl_->timeout_s,
                    [&] { return backend->_reduce_scatter_base(out, src, o); });
}

PendingWork ProcessGroup::all_gather_async(at::Tensor& out, const at::Tensor& in,
                                           const std::string& what) {
  TORCH_CHECK(out.numel() == in.numel() * size(), "all_gather_async: ", in.numel(), " values in, ",
              out.numel(), " out, world size ", size());
  if (!impl_) {
    out.copy_(in);
    return {};
  }
  payload_.all_gather += bytes_of(in);
  auto backend = impl_->backend;
  at::Tensor src = in;
  return start_work(describe() + ": " + what, impl_->timeout_s,
                    [&] { return backend->_allgather_base(out, src); });
}

at::Tensor ProcessGroup::ring_shift(const at::Tensor& t, int shift, const std::string& what) {
  if (impl_) payload_.ring_shift += bytes_of(t);
  const int w = size();
  const int s = ((shift % w) + w) % w;
  if (!impl_ || s == 0) return t.clone();
  const int dst = (rank() + s) % w;
  const int src = (rank() - s + w) % w;
  at::Tensor in = t.to(device_).contiguous();
  at::Tensor out = at::empty_like(in);
  auto backend = impl_->backend;
  const int tag = static_cast<int>(impl_->p2p_tag++ % 1000000);
  const bool coalesce = backend->supportsCoalescing();
  const std::string label = describe() + ": " + what + " (send to rank " + std::to_string(dst) +
                            ", receive from rank " + std::to_string(src) + ")";
  if (coalesce) {
    // NCCL: the send and the receive go in one group, else both ranks of a pair wait on each other.
    start_work(label, impl_->timeout_s, [&] {
      backend->startCoalescing();
      std::vector<at::Tensor> sv{in}, rv{out};
      backend->send(sv, dst, tag);
      backend->recv(rv, src, tag);
      return backend->endCoalescing();
    }).wait();
  } else {
    std::vector<at::Tensor> sv{in}, rv{out};
    auto sent = start_work(label, impl_->timeout_s, [&] { return backend->send(sv, dst, tag); });
    auto got = start_work(label, impl_->timeout_s, [&] { return backend->recv(rv, src, tag); });
    got.wait();
    sent.wait();
  }
  return out.device() == t.device() ? out : out.to(t.device());
}

void ProcessGroup::barrier(const std::string& what) {
  if (!impl_) return;
  all_reduce_int(0, ReduceOp::sum, what);
}

std::string ProcessGroup::broadcast_string(const std::string& s, int root) {
  if (!impl_) return s;
  at::Tensor len = at::full({1}, static_cast<std::int64_t>(s.size()),
                            at::TensorOptions().dtype(at::kLong).device(device_));
  broadcast(len, root, "broadcast of a string's length");
  const auto n = len.cpu().item<std::int64_t>();
  at::Tensor bytes = at::zeros({n}, at::TensorOptions().dtype(at::kByte));
  if (rank() == root) std::memcpy(bytes.data_ptr<std::uint8_t>(), s.data(), s.size());
  bytes = bytes.to(device_);
  broadcast(bytes, root, "broadcast of a string");
  bytes = bytes.cpu();
  return std::string(reinterpret_cast<const char*>(bytes.data_ptr<std::uint8_t>()),
                     static_cast<std::size_t>(n));
}

std::int64_t ProcessGroup::all_reduce_int(std::int64_t v, ReduceOp op, const std::string& what) {
  if (!impl_) return v;
  at::Tensor t = at::full({1}, v, at::TensorOptions().dtype(at::kLong).device(device_));
  all_reduce(t, op, what);
  return t.cpu().item<std::int64_t>();
}

}  // namespace clipper::dist
