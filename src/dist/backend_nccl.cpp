// Constructs c10d::ProcessGroupNCCL when clipper is compiled with the NCCL headers (the
// nvidia-nccl wheel's include folder, found by src/dist/CMakeLists.txt). The code is compiled on
// every machine that has them, GPU or not, and chosen at run time.
#include "backends.hpp"

#include <c10/cuda/CUDAFunctions.h>

#if CLIPPER_WITH_NCCL
#define USE_C10D_NCCL 1
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "clipper/core/error.hpp"

namespace clipper::dist::detail {

bool nccl_compiled() {
  return CLIPPER_WITH_NCCL != 0;
}

int select_cuda_device(int local_rank) {
  const int n = static_cast<int>(c10::cuda::device_count());
  if (n <= 0) throw core::Error("training on CUDA, but no CUDA device is visible");
  const int index = local_rank % n;
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(index));
  return index;
}

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                    const World& world,
                                                    std::chrono::milliseconds timeout,
                                                    int device_index) {
#if CLIPPER_WITH_NCCL
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  auto pg =
      c10::make_intrusive<c10d::ProcessGroupNCCL>(store, world.rank, world.world_size, options);
  // Binds this rank's communicator to its own device (no guessing from the first tensor).
  pg->setBoundDeviceId(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device_index)));
  return pg;
#else
  throw core::Error("this clipper was built without the NCCL headers: use dist.backend=gloo");
#endif
}

}  // namespace clipper::dist::detail
