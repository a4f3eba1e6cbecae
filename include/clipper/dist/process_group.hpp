#pragma once
// A process group: the ranks of one job and the collectives between them, on c10d.
//
//   auto world = clipper::dist::discover_world(cfg.dist);
//   auto pg = clipper::dist::ProcessGroup::create(world, cfg.dist, /*cuda=*/true);
//   pg->all_reduce(t);                      // in place, SUM
//   if (pg->any(stop_requested)) ...        // every rank agrees
//
// Rendezvous goes through a c10d TCPStore at world.master_addr:master_port (rank 0 serves it,
// or torchrun's agent does). The backend is NCCL when CUDA is used (one device per local rank:
// cuda:<local_rank>) and Gloo on CPU. dist.start_timeout_s bounds the start-up, dist.timeout_s
// every collective after it. A collective that fails (a peer died, a timeout) throws DistError
// naming this rank, the operation and the backend's reason; it never hangs silently. NCCL
// reports timeouts from its watchdog, which ends the process.
//
// ProcessGroup() is the single-process group: rank 0 of 1, every collective is the identity,
// so the training loop has one code path.
//
// Every rank must issue the same collectives in the same order, with tensors of the same shape
// and dtype (all_gather included: equal batch sizes on every rank).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>

#include "clipper/core/error.hpp"
#include "clipper/dist/world.hpp"

namespace clipper::config {
struct DistConfig;
}

namespace clipper::dist {

// A collective failed or timed out.
class DistError : public core::Error {
 public:
  using core::Error::Error;
};

enum class ReduceOp { sum, max, min };

// A collective in flight; wait() finishes it (and throws DistError if it failed).
class PendingWork {
 public:
  PendingWork() = default;  // nothing in flight
  void wait();
  bool pending() const { return impl_ != nullptr; }

  struct Impl;
  explicit PendingWork(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

 private:
  std::shared_ptr<Impl> impl_;
};

class ProcessGroup {
 public:
  // The single-process group.
  ProcessGroup();
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  // Joins the job described by `world` (single-process group when world.world_size == 1).
  // use_cuda: NCCL on cuda:<local_rank> (dist.backend auto|nccl); else Gloo on CPU.
  static std::shared_ptr<ProcessGroup> create(const World& world, const config::DistConfig& cfg,
                                              bool use_cuda);

  int rank() const { return world_.rank; }
  int size() const { return world_.world_size; }
  const World& world() const { return world_; }
  // "single", "gloo" or "nccl".
  const std::string& backend_name() const { return backend_name_; }
  // Where collectives want their tensors, and where the training loop puts its model: CPU for
  // Gloo and single, for NCCL cuda:<local_rank modulo the visible devices> (made current).
  at::Device device() const { return device_; }
  // "rank 1/4 (gloo)" -- the prefix of every error.
  std::string describe() const;

  // In place.
  void all_reduce(at::Tensor& t, ReduceOp op = ReduceOp::sum,
                  const std::string& what = "all_reduce");
  PendingWork all_reduce_async(at::Tensor& t, ReduceOp op, const std::string& what);
  void broadcast(at::Tensor& t, int root, const std::string& what = "broadcast");
  // Concatenates every rank's `t` along dim 0 (rank order): [size() * t.size(0), ...].
  at::Tensor all_gather(const at::Tensor& t, const std::string& what = "all_gather");
  // out [size() * n, ...] -> this rank's [n, ...] slice of the sum over ranks.
  at::Tensor reduce_scatter_sum(const at::Tensor& t, const std::string& what = "reduce_scatter");
  // The flat forms ZeRO uses, both tensors contiguous on device(): `out` [n] becomes this rank's
  // slice of the sum over ranks of `in` [size() * n] / every rank's `in` [n] in rank order
  // [size() * n]. Gloo emulates the reduce-scatter with an all-reduce and a slice (twice the
  // traffic). With one process `out` is a copy of `in`.
  PendingWork reduce_scatter_async(at::Tensor& out, const at::Tensor& in, const std::string& what);
  PendingWork all_gather_async(at::Tensor& out, const at::Tensor& in, const std::string& what);
  // Sends `t` to rank + shift and returns the tensor of rank - shift (modulo size()).
  at::Tensor ring_shift(const at::Tensor& t, int shift, const std::string& what = "ring_shift");
  void barrier(const std::string& what = "barrier");
  // Rank `root`'s string on every rank (e.g. a run name made from rank 0's clock).
  std::string broadcast_string(const std::string& s, int root = 0);

  std::int64_t all_reduce_int(std::int64_t v, ReduceOp op,
                              const std::string& what = "all_reduce_int");
  std::int64_t all_reduce_max_int(std::int64_t v) {
    return all_reduce_int(v, ReduceOp::max, "all_reduce_max");
  }
  std::int64_t all_reduce_min_int(std::int64_t v) {
    return all_reduce_int(v, ReduceOp::min, "all_reduce_min");
  }
  // True when `flag` is true on any rank / on every rank.
  bool any(bool flag) { return all_reduce_int(flag ? 1 : 0, ReduceOp::max, "any") != 0; }
  bool all(bool flag) { return all_reduce_int(flag ? 1 : 0, ReduceOp::min, "all") != 0; }

  // Timeout of later collectives.
  void set_timeout(double seconds);
  double timeout() const;

  // Bytes handed to each kind of collective so far (the payload, not what travels on the wire);
  // `clipper plan` is checked against these.
  struct Payload {
    std::uint64_t all_reduce = 0, all_gather = 0, reduce_scatter = 0, broadcast = 0, ring_shift = 0;
    std::uint64_t total() const {
      return all_reduce + all_gather + reduce_scatter + broadcast + ring_shift;
    }
  };
  const Payload& payload() const { return payload_; }

  struct Impl;

 private:
  Payload payload_;
  World world_;
  std::string backend_name_ = "single";
  at::Device device_{at::kCPU};
  std::unique_ptr<Impl> impl_;
};

// Another timeout for the collectives of one scope (checkpoint save and load have their own).
class ScopedTimeout {
 public:
  ScopedTimeout(ProcessGroup& pg, double seconds) : pg_(pg), before_(pg.timeout()) {
    if (seconds > 0) pg_.set_timeout(seconds);
  }
  ~ScopedTimeout() { pg_.set_timeout(before_); }
  ScopedTimeout(const ScopedTimeout&) = delete;
  ScopedTimeout& operator=(const ScopedTimeout&) = delete;

 private:
  ProcessGroup& pg_;
  double before_;
};

}  // namespace clipper::dist
