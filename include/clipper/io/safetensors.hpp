#pragma once
// A small reader and writer of the safetensors format (https://github.com/huggingface/safetensors):
//   8 bytes: header length N (little-endian u64) | N bytes: JSON header | tensor bytes
// The header maps each name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets into the
// bytes after the header) and may hold "__metadata__": {string: string}. The tensors must cover
// the data exactly, without gaps or overlaps. Dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL.
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "clipper/core/digest.hpp"

namespace clipper::io {

using TensorList = std::vector<std::pair<std::string, at::Tensor>>;  // keeps order

// Writes atomically (temporary file, fsync, rename). Tensors of any device, dtype and layout go
// in; their CPU contiguous bytes are written in the given order. Names must be unique. Returns the
// size and CRC-32 of the file, computed while writing.
core::FileDigest save_safetensors(const std::string& path, const TensorList& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

// Reads every tensor into CPU memory, in file (offset) order. Each error (bad header, truncated
// file, unknown dtype, shape/size mismatch, a tensor beyond the file or larger than `max_bytes`
// (0: max_tensor_bytes())) throws core::InputError naming the file and tensor. The header is
// hostile input: its nesting, shape products and offsets are checked before anything is allocated.
TensorList load_safetensors(const std::string& path,
                            std::map<std::string, std::string>* metadata = nullptr,
                            std::uint64_t max_bytes = 0);
// The same from a file's bytes in memory; `name` names it in errors.
TensorList load_safetensors_bytes(const std::string& bytes, const std::string& name,
                                  std::map<std::string, std::string>* metadata = nullptr,
                                  std::uint64_t max_bytes = 0);

// The largest single tensor a load accepts by default: the environment variable
// CLIPPER_MAX_TENSOR_BYTES (bytes) when set, else 64 GiB.
std::uint64_t max_tensor_bytes();

// "F32" for at::kFloat, ...; throws InputError for a dtype safetensors (here) cannot hold.
std::string safetensors_dtype_name(at::ScalarType type);

}  // namespace clipper::io
