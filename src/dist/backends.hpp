#pragma once
// The c10d backends, each constructed in its own translation unit (backend_gloo.cpp sees the
// Gloo declaration shim, backend_nccl.cpp the CUDA and NCCL headers).
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>

#include "clipper/dist/world.hpp"

namespace clipper::dist::detail {

// Gloo over TCP. The device binds to GLOO_SOCKET_IFNAME when set, to 127.0.0.1 when the job
// runs on one node, else to the address this host's name resolves to.
c10::intrusive_ptr<c10d::Backend> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                    const World& world,
                                                    std::chrono::milliseconds timeout);

// True when clipper was compiled with the NCCL headers.
bool nccl_compiled();
// The CUDA device of a local rank, made current: local_rank modulo the visible devices (a
// launcher that binds one GPU per task leaves each rank one visible device, cuda:0). Throws when
// none is visible.
int select_cuda_device(int local_rank);
// NCCL on cuda:<device_index>; throws when not compiled in.
c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                    const World& world,
                                                    std::chrono::milliseconds timeout,
                                                    int device_index);

}  // namespace clipper::dist::detail
