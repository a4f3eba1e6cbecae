#pragma once
// The one state contract: everything that must survive a restart is a Stateful part with a name.
// The trainer hands checkpoint::Manager one list of parts; save and resume walk the same list, so
// what is written and what is read back cannot drift apart.
//
// A part's state is tensors and/or JSON. Where it goes in the checkpoint folder:
//   global part P (rank 0 writes it, every rank reads it):  P.safetensors, P.json
//   per-rank part P (each rank writes its own):              rank_<R>.safetensors (tensors named
//                                                            "P/<name>"), rank_<R>.json (key P)
// A per-rank part reads its own rank's files by default, which needs the world size that wrote
// them; a part whose state can be re-split (the optimizer's flat shards, the loader's positions)
// overrides load_ranks() and reads whichever saved ranks it needs, so it resumes on any world size.
#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "clipper/core/error.hpp"

namespace clipper::checkpoint {

using TensorList = std::vector<std::pair<std::string, at::Tensor>>;

struct PartState {
  TensorList tensors;
  nlohmann::json json;  // null: none
};

// Every saved rank's state of one per-rank part, read on demand (each file CRC-checked once).
class SavedRanks {
 public:
  virtual ~SavedRanks() = default;
  virtual int world_size() const = 0;
  // The part's entry in rank_<R>.json (null: none).
  virtual nlohmann::json json(int rank) const = 0;
  // The part's tensors in rank_<R>.safetensors and its JSON.
  virtual PartState read(int rank) const = 0;
};

class Stateful {
 public:
  virtual ~Stateful() = default;
  // Called on every rank that writes the part (rank 0 alone for a global part).
  virtual PartState state() const = 0;
  // `where` names the checkpoint folder, for error messages.
  virtual void load_state(const PartState& state, const std::string& where) = 0;
  // Per-rank parts: restores rank `rank` of `world_size` from the saved ranks. The default loads
  // this rank's own state and refuses a checkpoint written by another world size.
  virtual void load_ranks(const SavedRanks& saved, int rank, int world_size,
                          const std::string& where) {
    if (saved.world_size() != world_size)
      throw core::InputError("checkpoint '" + where + "' was written by " +
                             std::to_string(saved.world_size()) + " ranks; this run has " +
                             std::to_string(world_size) +
                             " and this part cannot be re-split (see docs/distributed.md)");
    load_state(saved.read(rank), where);
  }
};

enum class Scope { global, per_rank };

struct Part {
  std::string name;  // file or key name: a plain identifier ("model", "loader")
  Scope scope = Scope::global;
  Stateful* state = nullptr;  // not owned
};

using Parts = std::vector<Part>;

}  // namespace clipper::checkpoint
