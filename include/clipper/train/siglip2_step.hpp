#pragma once
// SigLIP 2's terms inside TrainStep (loss.siglip2; docs/training.md, "SigLIP 2's objective"):
// per step, with the weight average swapped in, the teacher's targets (no grad) when SILC or
// masked prediction runs; then the student's forward (the contrastive loss on its image and text
// features), the LocCa decoder loss on its un-pooled image tokens and the distillation terms;
// after the optimizer step, DINO's centres. The centres are its checkpoint state (state /
// load_state); the heads are model parameters (model::add_siglip2_heads).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "clipper/config/config.hpp"
#include "clipper/data/regions.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/train/metrics.hpp"
#include "clipper/train/siglip2_objective.hpp"

namespace clipper::dist {
class ProcessGroup;
}

namespace clipper::train {

class WeightEma;

// The start-time refusals of loss.siglip2 against the rest of the run's config and the model
// (each an InputError naming the key and what is expected): LocCa without a decoder; SILC or
// masked prediction without train.ema_decay, without an OpenCLIP ViT, or (masked, LocCa) with an
// attentional pooler; train.accum_freq > 1; dist.zero 3; NaFlex batches; loss.distill_model.
void check_siglip2(const config::Config& cfg, const model::ClipImpl& model);

// model::Siglip2HeadOptions of the config (heads only for the terms switched on).
model::Siglip2HeadOptions siglip2_head_options(const config::Siglip2Config& cfg);

// The options of the terms (loss weights, views at the model's image size, the pad id).
Siglip2Options siglip2_options(const config::Siglip2Config& cfg, const model::ModelSpec& spec);

class Siglip2Step {
 public:
  // `model` holds the heads already (add_siglip2_heads) and sits on its device.
  Siglip2Step(const config::Siglip2Config& cfg, model::ClipImpl& model, std::uint64_t seed);

  // The step about to run, of total_steps (the start fraction and the per-step draws).
  void set_progress(std::int64_t step, std::int64_t total_steps);

  using Contrastive = std::function<at::Tensor(const model::ClipOutput&)>;
  // The step's loss: contrastive(the student's features) + the terms. images: normalized, on the
  // device; the teacher pass swaps `ema` in and out first (must not be null when distilling).
  at::Tensor loss(model::ClipImpl& model, WeightEma* ema, const at::Tensor& images,
                  const at::Tensor& tokens, const data::RegionBatch& regions,
                  const Contrastive& contrastive);

  // After the optimizer step: the centres move toward this step's teacher means (averaged across
  // ranks), unless the step was skipped (`bad`).
  void after_update(const at::Tensor& bad, dist::ProcessGroup& pg);

  // The window's means since the last call (train/loss_locca, train/loss_silc,
  // train/loss_masked: each only when it ran; train/locca_without_regions,
  // train/locca_no_room and train/locca_region_samples: sums), then a new window. Reads the
  // device.
  Scalars take_scalars();

  // The checkpoint state: the centres ("image_center", "patch_center") when distilling.
  std::vector<std::pair<std::string, at::Tensor>> state() const;
  void load_state(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                  const std::string& where);

 private:
  void record(const Siglip2Terms& terms, const data::RegionBatch& regions, bool distilled);

  config::Siglip2Config cfg_;
  Siglip2Options options_;
  DistillParts parts_;
  std::uint64_t seed_;
  std::int64_t step_ = 0, total_steps_ = 1;
  TeacherTargets pending_;  // this step's teacher outputs, for after_update
  struct Sum {
    at::Tensor value;
    std::int64_t count = 0;
  };
  Sum locca_, silc_, masked_;
  std::int64_t without_regions_ = 0, region_samples_ = 0, no_room_ = 0;
};

}  // namespace clipper::train
