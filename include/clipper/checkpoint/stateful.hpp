#pragma once
// The one state contract: everything that must survive a restart is a Stateful part with a name.
// The trainer hands checkpoint::Manager one list of parts; save and resume walk the same list, so
// what is written and what is read back cannot drift apart.
//
// A part's state is tensors and/or JSON. Where it goes in the checkpoint folder:
//   global part P (rank 0 writes it, every rank reads it):  P.safetensors, P.json
//   per-rank part P (each rank writes and reads its own):    rank_<R>.safetensors (tensors named
//                                                            "P/<name>"), rank_<R>.json (key P)
#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace clipper::checkpoint {

using TensorList = std::vector<std::pair<std::string, at::Tensor>>;

struct PartState {
  TensorList tensors;
  nlohmann::json json;  // null: none
};

class Stateful {
 public:
  virtual ~Stateful() = default;
  // Called on every rank that writes the part (rank 0 alone for a global part).
  virtual PartState state() const = 0;
  // `where` names the checkpoint folder, for error messages.
  virtual void load_state(const PartState& state, const std::string& where) = 0;
};

enum class Scope { global, per_rank };

struct Part {
  std::string name;  // file or key name: a plain identifier ("model", "loader")
  Scope scope = Scope::global;
  Stateful* state = nullptr;  // not owned
};

using Parts = std::vector<Part>;

}  // namespace clipper::checkpoint
