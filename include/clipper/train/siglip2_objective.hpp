#pragma once
// SigLIP 2's extra terms on one batch, composed (docs/training.md): the LocCa decoder loss on
// every step; from `start_fraction` of training SILC (the student's local views against the
// teacher's global view) and masked prediction (the student's masked patches against the
// teacher's). The teacher is the weight EMA: the caller runs teacher_targets with the averages
// swapped into the model (train::EmaSwapped), before the student's forward, since the swap
// writes the weights in place. The sigmoid loss stays the step's own.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "clipper/loss/siglip2_loss.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/model/siglip2.hpp"
#include "clipper/train/siglip2_locca.hpp"
#include "clipper/train/siglip2_views.hpp"

namespace clipper::train {

// The distillation terms' state: the model's heads (model::add_siglip2_heads; with the weight
// average swapped in they are the teacher's, the EMA of the student's) and DINO's centres.
struct DistillParts {
  model::Siglip2Heads heads{nullptr};
  at::Tensor image_center, patch_center;  // [K]
};

struct Siglip2Options {
  bool locca = true, silc = true, masked = true;
  double start_fraction = 0.8;  // SILC and masked prediction from here (the paper's last 20%)
  double mask_ratio = 0.5;      // TIPS / SigLIP 2: half the student's patches
  loss::Siglip2Weights weights;
  loss::DistillTemps temps;
  LocalViewOptions views;
  LoccaOptions locca_options;
};

// Whether SILC and masked prediction run at `step` of `total_steps`.
bool distillation_active(const Siglip2Options& o, std::int64_t step, std::int64_t total_steps);

struct TeacherTargets {
  at::Tensor image_scores;  // [B, K]: the teacher's image head on the global view
  at::Tensor patch_scores;  // [B, N, K]: its patch head on the patches (masked prediction only)
};
// No gradient; call with the teacher's weights in the model.
TeacherTargets teacher_targets(model::ClipImpl& model, DistillParts& parts,
                               const at::Tensor& images);

struct Siglip2Terms {
  at::Tensor total;                // weights.locca * locca + weights.silc * silc + ...
  at::Tensor locca, silc, masked;  // each 0 when off or not yet started
  loss::LoccaLoss locca_parts;
};
// targets: null on a step without distillation. images [B, 3, S, S] normalized; captions [B, L];
// image_tokens: the student's encode_image_tokens(images).second when the caller has them
// (undefined: computed here).
Siglip2Terms student_terms(model::ClipImpl& model, DistillParts& parts, const at::Tensor& images,
                           const at::Tensor& image_tokens, const at::Tensor& captions,
                           const RegionBatch& regions, const TeacherTargets* targets,
                           const Siglip2Options& o, at::Generator gen);

// The centres' means of the teacher's outputs: [K] each (to average across ranks before
// update_centers).
struct TeacherMeans {
  at::Tensor image, patch;
};
TeacherMeans teacher_means(const TeacherTargets& targets);
// After the optimizer step: the centres move toward the teacher's means (DINO's momentum).
void update_centers(DistillParts& parts, const TeacherMeans& means,
                    const loss::DistillTemps& temps);

}  // namespace clipper::train
