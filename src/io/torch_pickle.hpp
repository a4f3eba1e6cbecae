#pragma once
// Reads a state dict or a training checkpoint from a torch.save file (zip format); see
// torch_pickle.cpp.
#include <cstdint>
#include <string>

#include "clipper/io/safetensors.hpp"
#include "clipper/io/torch_checkpoint.hpp"

namespace clipper::io::detail {

// What the reader may build besides the tensors (values, strings, the lists it converts them to):
// built_bytes_per_file_byte times the file's size plus built_bytes_floor. A real torch.save file
// needs a few dozen bytes per byte of pickle, and its pickle is a small part of it beside the
// tensor data; a pickle that repeats a large value by memo reference (two bytes each) passes the
// limit early and is refused with an error that names the file and the limit.
struct PickleLimits {
  std::uint64_t built_bytes_per_file_byte = 64;
  std::uint64_t built_bytes_floor = std::uint64_t{16} << 20;
};

// The tensors of the file's top-level dict, or of its "state_dict" entry, in file order.
// Throws core::InputError naming the file.
TensorList read_torch_save_state_dict(const std::string& path);

// The same from the bytes of such a file in memory; `name` names it in errors.
TensorList read_torch_save_state_dict_bytes(const std::string& bytes, const std::string& name,
                                            const PickleLimits& limits = {});

// read_torch_train_checkpoint from the bytes of a file in memory.
TorchTrainCheckpoint read_torch_train_checkpoint_bytes(const std::string& bytes,
                                                       const std::string& name,
                                                       const PickleLimits& limits = {});

}  // namespace clipper::io::detail
