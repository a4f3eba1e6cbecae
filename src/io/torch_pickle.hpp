#pragma once
// Reads a state dict or a training checkpoint from a torch.save file (zip format); see
// torch_pickle.cpp.
#include <string>

#include "clipper/io/safetensors.hpp"
#include "clipper/io/torch_checkpoint.hpp"

namespace clipper::io::detail {

// The tensors of the file's top-level dict, or of its "state_dict" entry, in file order.
// Throws core::InputError naming the file.
TensorList read_torch_save_state_dict(const std::string& path);

// The same from the bytes of such a file in memory; `name` names it in errors.
TensorList read_torch_save_state_dict_bytes(const std::string& bytes, const std::string& name);

// read_torch_train_checkpoint from the bytes of a file in memory.
TorchTrainCheckpoint read_torch_train_checkpoint_bytes(const std::string& bytes,
                                                       const std::string& name);

}  // namespace clipper::io::detail
