#pragma once
// The model-side pieces of SigLIP 2's extra terms (docs/training.md), on clipper's towers.
//
// The decoder of a CoCa model (spec.coca) run as SigLIP 2's LocCa decoder: on any task sequence
// (a caption, a referring expression, a grounded caption; docs/training.md), with causal
// self-attention (autoregressive prediction, as CoCa's forward) or without (parallel prediction:
// the target's inputs are mask tokens, see loss::parallel_inputs, and each position attends to
// every other one).
#include <ATen/core/Tensor.h>

#include "clipper/model/clip.hpp"
#include "clipper/model/vision.hpp"

namespace clipper::model {

// image_tokens: [B, Li, width] (encode_image_tokens), tokens: [B, L] -> logits [B, L - 1,
// vocab] of tokens[:, 1:] (the label shift of forward_coca). The text tower reads the tokens as
// in forward_coca; `causal` applies to the decoder's self-attention.
at::Tensor decoder_logits(ClipImpl& model, const at::Tensor& image_tokens, const at::Tensor& tokens,
                          bool causal);

// Masked prediction's student (TIPS / SigLIP 2): the ViT's patch tokens after ln_post,
// [B, N, width], with the patch embeddings where mask [B, N] (bool) is true replaced by
// mask_token [width] before the class token and positional embeddings are added (no patch
// dropout). A tower with an attentional pooler has no per-patch outputs: InputError.
at::Tensor masked_patch_tokens(VisionTransformerImpl& vit, const at::Tensor& images,
                               const at::Tensor& mask, const at::Tensor& mask_token);

}  // namespace clipper::model
