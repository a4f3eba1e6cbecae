#pragma once
// The parts of the state contract that the trainer registers (checkpoint/stateful.hpp): thin
// adapters, so the model, optimizer and loader stay free of checkpoint code.
//   model      global    the model's state dict (OpenCLIP names); with dist.zero 3 without the
//                        trainable parameters, which model.json lists
//   params     per rank  dist.zero 3: this rank's shards of the trainable parameters (the
//                        optimizer's flat-shard form); re-split on load for any stage and world
//                        size
//   optimizer  per rank  this rank's flat shard of the AdamW moments, with the layout in its JSON
//                        (any stage); re-split on load when the world size changed
//   trainer    global    step, total steps, NaN counters (the run of bad steps is the step's),
//                        the layout that counted the steps (world size, per-rank batch,
//                        accum_freq) and the micro-batches dropped at epoch ends
//   ema        global    the weight average (train.ema_decay > 0): its tensors (OpenCLIP names)
//                        and, in ema.json, its update count and decay; with dist.zero 3 the
//                        buffers' average only, ema.json listing the parameters of ema_shards
//   ema_shards per rank  dist.zero 3: this rank's shards of the parameters' average (flat-shard
//                        form, key "ema"); re-split on load for any stage and world size
//   rng        per rank  the CPU (and CUDA) generator states (another world size: a rank that
//                        has no saved state keeps its fresh one)
//   loader     per rank  the loader's position and bad-data counters (another world size: only
//                        at an epoch boundary, or with data.reshard_to_next_epoch)
//   siglip2    global    loss.siglip2 with SILC or masked prediction: DINO's centres
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

#include "clipper/checkpoint/stateful.hpp"
#include "clipper/model/clip.hpp"

namespace clipper::optim {
class AdamW;
}
namespace clipper::data {
class Loader;
}
namespace clipper::train {
class TrainStep;
class WeightEma;
class Siglip2Step;
}  // namespace clipper::train

namespace clipper::trainer {

// What one optimizer step is made of: a step count means something only with its layout.
struct StepLayout {
  std::int64_t world_size = 1, batch_size = 0, accum_freq = 1;
  bool operator==(const StepLayout& o) const {
    return world_size == o.world_size && batch_size == o.batch_size && accum_freq == o.accum_freq;
  }
  bool operator!=(const StepLayout& o) const { return !(*this == o); }
  std::string text() const;  // "2 rank(s) x batch 32 x accum_freq 1"
};

struct TrainerCounters : checkpoint::Stateful {
  std::int64_t global_step = 0;
  std::int64_t total_steps = 0;
  std::int64_t nan_total = 0;
  std::int64_t dropped_batches = 0;  // micro-batches left at epoch ends (accum_freq > 1)
  StepLayout layout;                 // this run's
  StepLayout saved_layout;           // the resumed checkpoint's (an older one: its world size,
                                     // this run's batch and accum_freq); total_steps likewise
  std::int64_t saved_total_steps = 0;
  std::string model_name;
  train::TrainStep* step = nullptr;  // owns the run of bad steps

  checkpoint::PartState state() const override;
  void load_state(const checkpoint::PartState& state, const std::string& where) override;
};

// "model" (global) and "params" (per rank), registered in that order.
struct ModelParts {
  std::unique_ptr<checkpoint::Stateful> whole, shards;
};
ModelParts make_model_parts(model::Clip model, train::TrainStep& step);
std::unique_ptr<checkpoint::Stateful> make_optimizer_part(train::TrainStep& step);
// "ema" (global) and "ema_shards" (per rank), registered in that order.
struct EmaParts {
  std::unique_ptr<checkpoint::Stateful> whole, shards;
};
EmaParts make_ema_parts(train::WeightEma& ema);
std::unique_ptr<checkpoint::Stateful> make_rng_part(at::Device device);
std::unique_ptr<checkpoint::Stateful> make_loader_part(data::Loader& loader);
// "siglip2" (global): loss.siglip2's centres (SILC / masked prediction), the same on every rank.
std::unique_ptr<checkpoint::Stateful> make_siglip2_part(train::Siglip2Step& siglip2);

}  // namespace clipper::trainer
