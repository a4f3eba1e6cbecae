#pragma once
// SigLIP 2's LocCa decoder loss on one batch (docs/training.md): the caption of every sample, and
// the referring-expression (ARef) and grounded-caption (GCap) sequences of the samples that have
// regions, through the model's decoder (model::decoder_logits) with causal attention, or, on a
// parallel-prediction step, with the targets' inputs replaced by the mask id and full attention.
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "clipper/data/regions.hpp"
#include "clipper/loss/siglip2_loss.hpp"
#include "clipper/model/clip.hpp"

namespace clipper::train {

// The region sequences of the samples that have regions (data::make_region_batch).
using RegionBatch = data::RegionBatch;

struct LoccaOptions {
  bool parallel = false;     // this step uses parallel prediction (loss::parallel_prediction_step)
  std::int64_t mask_id = 0;  // the targets' input id on a parallel step (no mask_embedding)
  // [text width]: on a parallel step the targets' input embedding instead of mask_id's (the
  // trainer's choice: model::Siglip2HeadsImpl::text_mask)
  at::Tensor mask_embedding;
  std::int64_t pad_id = 0;  // label positions holding it are not predicted
  loss::LoccaTaskWeights weights;
};

// image_tokens: [B, Li, width] (model.encode_image_tokens), captions: int64 [B, L] (the batch's
// tokens; the target starts after the start token).
loss::LoccaLoss locca_decoder_loss(model::ClipImpl& model, const at::Tensor& image_tokens,
                                   const at::Tensor& captions, const RegionBatch& regions,
                                   const LoccaOptions& options);

}  // namespace clipper::train
