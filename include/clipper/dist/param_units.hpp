#pragma once
// Full sharding's parameters (dist.zero 3): the trainable parameters grouped into units, each unit
// one padded flat buffer (one bucket of a FlatLayout) whose parameters are views into it.
//
// Units are found from the parameter names, without knowing the model's classes: a parameter
// inside a block (`<...>.resblocks.N.`, `<...>.blocks.N.`, `<...>.layers.N.`, ResNet's
// `<...>.layerK.N.`) belongs to that block's unit; the other parameters of a tower that has blocks
// (`visual.conv1.weight`, `visual.proj`, ...) to the tower's unit; the rest (token embedding,
// text projection, logit scale, ...) to one last unit. The layout lists the units last first and
// each unit's parameters last first, the order backward produces their gradients.
//
//   release()        each rank keeps only its shard of every unit (shards()); the buffers are
//                    freed, the parameters keep their shapes but no data
//   OnDemand scope   while it lives, an operation that reads a parameter of a released unit
//                    (forward, a checkpointed block's recompute, backward) first all-gathers the
//                    unit; at most max_gathered units are whole at once, the least recently used
//                    freed first (never one the operation reads)
//   gather_all()     every unit whole again, from the shards (after the optimizer updated them)
//
// Every rank runs the same operations in the same order, so every rank gathers the same units in
// the same order. The gather is hooked on every operation through a RecordFunction callback
// (ATen's operator observers), keyed on the storage the parameters share; an operation that read
// a released parameter any other way would fail with "data is not allocated", never compute with
// stale values.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "clipper/dist/flat_layout.hpp"

namespace clipper::dist {

class ProcessGroup;

// The unit of each parameter name ("" for the last unit).
std::vector<std::string> unit_names(const std::vector<std::string>& param_names);

// One bucket per unit (units in reverse order of first appearance, parameters last first), padded
// to a multiple of world_size. All parameters of a unit must share dtype and device.
FlatLayout unit_layout(const std::vector<at::Tensor>& params,
                       const std::vector<std::string>& param_names, int world_size);

class ParamUnits {
 public:
  // Makes the parameters views into their unit's buffer (values kept), whole.
  ParamUnits(std::vector<at::Tensor> params, const std::vector<std::string>& names,
             std::shared_ptr<ProcessGroup> pg, int max_gathered = 2);
  ~ParamUnits();
  ParamUnits(const ParamUnits&) = delete;
  ParamUnits& operator=(const ParamUnits&) = delete;

  const FlatLayout& layout() const;
  // This rank's shard of every unit, the optimizer's parameters while released.
  std::vector<at::Tensor>& shards();
  // The shards from the whole units, then every unit's buffer freed.
  void release();
  // Every unit whole again from the shards (all-gathered).
  void gather_all();

  // Gathers on demand for its lifetime (one at a time per process).
  class OnDemand {
   public:
    explicit OnDemand(ParamUnits& units);
    ~OnDemand();
    OnDemand(const OnDemand&) = delete;
    OnDemand& operator=(const OnDemand&) = delete;

   private:
    std::uint64_t handle_;
  };

  // Bytes of the shards plus the most bytes of whole units at once since the last release().
  std::int64_t peak_bytes() const;
  // Bytes of all units whole (the parameters unsharded, with padding).
  std::int64_t whole_bytes() const;
  // Unit all-gathers since construction (on demand and gather_all).
  std::int64_t gathers() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace clipper::dist
