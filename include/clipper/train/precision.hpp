#pragma once
// Mixed precision: bf16 autocast on CUDA through an RAII guard (LibTorch has none in C++).
// The autocast state is thread-local: create the guard on the thread that runs the forward pass.
#include <c10/core/DeviceType.h>

namespace clipper::train {

class AutocastGuard {
 public:
  // enabled=false makes the guard a no-op (fp32, or CPU).
  AutocastGuard(bool enabled, c10::DeviceType device = c10::DeviceType::CUDA);
  ~AutocastGuard();  // restores the previous state and, at the outermost level, clears the cast
                     // cache
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool enabled_;
  bool was_enabled_ = false;
  c10::DeviceType device_;
};

// Allows TF32 matmuls and convolutions on CUDA (a no-op elsewhere).
void set_tf32(bool enabled);

}  // namespace clipper::train
