#pragma once
// A training checkpoint saved by Python's torch.save, as open_clip_train writes `epoch_N.pt`:
// {"epoch": int, "name": str, "state_dict": {name: tensor}, "optimizer":
// torch.optim.Optimizer.state_dict(), "scaler": ...}. Read with clipper's own unpickler
// (src/io/torch_pickle.cpp): only these entries are taken out, everything else is skipped.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "clipper/io/safetensors.hpp"

namespace clipper::io {

// One entry of the optimizer's "param_groups".
struct TorchOptimizerGroup {
  std::vector<std::int64_t> params;                   // indices into "state"
  std::map<std::string, double> scalars;              // numbers, and booleans as 1 / 0
  std::map<std::string, std::vector<double>> tuples;  // tuples of numbers (betas)
  std::vector<std::string> none;                      // keys whose value is None
};

// torch.optim.Optimizer.state_dict(): each parameter's state by its index, and the groups.
struct TorchOptimizerState {
  // "step", "exp_avg", ...: tensors as saved, a number as a 0-dim float64 tensor.
  std::map<std::int64_t, std::map<std::string, at::Tensor>> state;
  std::vector<TorchOptimizerGroup> groups;
};

struct TorchTrainCheckpoint {
  std::vector<std::string> keys;  // the top-level dict's string keys, in file order
  TensorList state_dict;          // names as saved ("module." kept)
  std::optional<std::int64_t> epoch;
  std::string name;
  std::optional<TorchOptimizerState> optimizer;
};

// Throws core::InputError naming the file for anything malformed, including an "optimizer"
// entry that is not the dict torch.optim writes.
TorchTrainCheckpoint read_torch_train_checkpoint(const std::string& path);

}  // namespace clipper::io
