#pragma once
// Reads a state dict from a torch.save file (zip format); see torch_pickle.cpp.
#include <string>

#include "clipper/io/safetensors.hpp"

namespace clipper::io::detail {

// The tensors of the file's top-level dict, or of its "state_dict" entry, in file order.
// Throws core::InputError naming the file.
TensorList read_torch_save_state_dict(const std::string& path);

// The same from the bytes of such a file in memory; `name` names it in errors.
TensorList read_torch_save_state_dict_bytes(const std::string& bytes, const std::string& name);

}  // namespace clipper::io::detail
