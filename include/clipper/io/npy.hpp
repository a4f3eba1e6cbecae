#pragma once
// NumPy .npy files (format 1.0): what `clipper embed` writes and numpy.load reads.
#include <ATen/core/Tensor.h>

#include <string>

namespace clipper::io {

// Writes a CPU or device tensor of float32/float64/int64/int32/uint8 as a C-order .npy (atomic).
void save_npy(const std::string& path, const at::Tensor& tensor);

}  // namespace clipper::io
