#pragma once
// Full sharding's parameters (dist.zero 3): the trainable parameters grouped into units, each unit
// one padded flat buffer (one bucket of a FlatLayout) whose parameters are views into it.
//
// Units are found from the parameter names, without knowing the model's classes: a parameter
// inside a block (`<...>.resblocks.N.`, `<...>.blocks.N.`, `<...>.layers.N.`, ResNet's
// `<...>.layerK.N.`) belongs to that block's unit; the other parameters of a tower that has blocks
// (`visual.conv1.weight`, `visual.proj`, ...) to the tower's unit; logit_scale and logit_bias to
// a unit of their own (read after every step: the clamp, the logged scale); the rest (token
// embedding, text projection, ...) to one last unit. The layout lists the units last first and
// each unit's parameters last first, the order backward produces their gradients.
//
//   release()        each rank keeps only its shard of every unit (shards()), taken from the
//                    whole units (so changes made to whole parameters are kept); the buffers are
//                    freed, the parameters keep their shapes but no data
//   OnDemand scope   while it lives, an operation that reads a parameter of a released unit
//                    (forward, a checkpointed block's recompute, backward) first all-gathers the
//                    unit; at most max_gathered units are whole at once (one more while a
//                    prefetch is in flight), the least recently used freed first (never one the
//                    operation reads), its shard taken back from it first unless it was gathered
//                    in bf16
//   drop()           frees the whole units without taking their shards back (stale once the
//                    optimizer updated the shards)
//   gather_all()     every unit whole, from the shards
//
// A step pass (OnDemand with Pass::step) records the order in which operations first use each
// unit; with prefetch, the next pass starts the all-gather of the unit that came next last time
// as soon as the current one is in use, and stops prefetching for the pass at the first unit
// that does not follow the recorded order. With gather_bf16 a step pass gathers float32 units as
// bfloat16 (half the bytes) and widens them into the buffer: forward and backward compute with
// rounded weights, the shards the optimizer updates stay float32.
//
// Every rank runs the same operations in the same order, so every rank gathers (and prefetches)
// the same units in the same order. The gather is hooked on every operation through a
// RecordFunction callback (ATen's operator observers), keyed on the storage the parameters share;
// an operation that read a released parameter any other way would fail with "data is not
// allocated", never compute with stale values.
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

struct UnitOptions {
  int max_gathered = 2;      // whole units at once (one more while a prefetch is in flight)
  bool prefetch = false;     // dist.prefetch
  bool gather_bf16 = false;  // dist.gather_bf16 (step passes, float32 units)
};

// What the gathers did since construction.
struct UnitCounters {
  std::int64_t gathers = 0;     // unit all-gathers started (on demand, prefetched, gather_all)
  std::int64_t prefetched = 0;  // of which prefetched
  double wait_s = 0;            // seconds the calling thread waited for gathers to finish
};

class ParamUnits {
 public:
  // Makes the parameters views into their unit's buffer (values kept), whole.
  ParamUnits(std::vector<at::Tensor> params, const std::vector<std::string>& names,
             std::shared_ptr<ProcessGroup> pg, UnitOptions options = {});
  ~ParamUnits();
  ParamUnits(const ParamUnits&) = delete;
  ParamUnits& operator=(const ParamUnits&) = delete;

  struct State;

  const FlatLayout& layout() const;
  // This rank's shard of every unit, the optimizer's parameters while released.
  std::vector<at::Tensor>& shards();
  // The shards from the whole units, then every unit's buffer freed.
  void release();
  // Every whole unit's buffer freed, the shards left as they are.
  void drop();
  // This rank's shards, taken from the units whole now (nothing freed).
  const std::vector<at::Tensor>& current_shards();
  // Every unit whole from the shards (all-gathered; units already whole are kept).
  void gather_all();

  // A step pass records the order units are used in and may prefetch and gather in bf16; any
  // other pass gathers exactly, unit by unit.
  enum class Pass { step, other };
  // Gathers on demand for its lifetime (one at a time per process).
  class OnDemand {
   public:
    explicit OnDemand(ParamUnits& units, Pass pass = Pass::step);
    ~OnDemand();
    OnDemand(const OnDemand&) = delete;
    OnDemand& operator=(const OnDemand&) = delete;

   private:
    State* state_;
    std::uint64_t handle_;
  };

  // Bytes of the shards plus the most bytes of whole units at once since reset_peak() (the whole
  // model of gather_all() not counted).
  std::int64_t peak_bytes() const;
  void reset_peak();
  // Bytes of the shards plus the units whole now.
  std::int64_t resident_bytes() const;
  // Bytes of all units whole (the parameters unsharded, with padding).
  std::int64_t whole_bytes() const;
  // Unit all-gathers since construction (on demand, prefetched and gather_all).
  std::int64_t gathers() const;
  UnitCounters counters() const;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace clipper::dist
