#pragma once
// The model-side pieces of SigLIP 2's extra terms (docs/training.md), on clipper's towers.
//
// The decoder of a CoCa model (spec.coca) run as SigLIP 2's LocCa decoder: on any task sequence
// (a caption, a referring expression, a grounded caption; docs/training.md), with causal
// self-attention (autoregressive prediction, as CoCa's forward) or without (parallel prediction:
// the target's inputs are mask tokens, see loss::parallel_inputs, and each position attends to
// every other one).
#include <ATen/core/Tensor.h>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>

#include "clipper/model/clip.hpp"
#include "clipper/model/linear.hpp"
#include "clipper/model/vision.hpp"

namespace clipper::model {

// image_tokens: [B, Li, width] (encode_image_tokens), tokens: [B, L] -> logits [B, L - 1,
// vocab] of tokens[:, 1:] (the label shift of forward_coca). The text tower reads the tokens as
// in forward_coca; `causal` applies to the decoder's self-attention.
at::Tensor decoder_logits(ClipImpl& model, const at::Tensor& image_tokens, const at::Tensor& tokens,
                          bool causal);
// Parallel prediction with a learned mask embedding (CLIP's vocabulary has no mask token): the
// text tower's input embedding at every position >= target_start[i] (padding included) is
// `mask_embedding` [text width] instead of the token's, those positions count as text (not
// padding), and the decoder's self-attention is full.
at::Tensor parallel_decoder_logits(ClipImpl& model, const at::Tensor& image_tokens,
                                   const at::Tensor& tokens, const at::Tensor& target_start,
                                   const at::Tensor& mask_embedding);

// Masked prediction's student (TIPS / SigLIP 2): the ViT's patch tokens after ln_post,
// [B, N, width], with the patch embeddings where mask [B, N] (bool) is true replaced by
// mask_token [width] before the class token and positional embeddings are added (no patch
// dropout). A tower with an attentional pooler has no per-patch outputs: InputError.
at::Tensor masked_patch_tokens(VisionTransformerImpl& vit, const at::Tensor& images,
                               const at::Tensor& mask, const at::Tensor& mask_token);

// The projection head of SILC's and masked prediction's cross-entropy (DINO's head without
// weight normalisation): fc1 (in -> hidden), GELU, fc2 (hidden -> bottleneck), L2
// normalisation, then `prototypes` [K, bottleneck] (no bias) -> [..., K] scores. DINO's sizes
// are hidden 2048, bottleneck 256, K 65536; the student and the teacher each hold one (the
// teacher's the student's EMA). Parameters start as torch::nn::Linear's, from the global
// generator.
class DistillHeadImpl : public torch::nn::Module {
 public:
  DistillHeadImpl(std::int64_t in, std::int64_t hidden, std::int64_t bottleneck, std::int64_t k);
  at::Tensor forward(const at::Tensor& x);
  Linear fc1{nullptr}, fc2{nullptr};
  at::Tensor prototypes;
};
TORCH_MODULE(DistillHead);

// The parameters SigLIP 2's terms add to a model, registered on it as "siglip2" (so the
// optimizer, ZeRO, checkpoints and the weight EMA hold them; the teacher's heads are the EMA's):
// each present only when its term is on.
struct Siglip2HeadOptions {
  bool distill = false;        // SILC or masked prediction: image_head, patch_head
  bool masked = false;         // masked prediction: mask_token
  bool parallel = false;       // LocCa's parallel prediction: text_mask
  std::int64_t hidden = 2048;  // DistillHead's sizes
  std::int64_t bottleneck = 256;
  std::int64_t prototypes = 65536;
};
class Siglip2HeadsImpl : public torch::nn::Module {
 public:
  Siglip2HeadsImpl(const ClipImpl& model, const Siglip2HeadOptions& options);
  DistillHead image_head{nullptr};  // on the pooled image features [embed_dim]
  DistillHead patch_head{nullptr};  // on the ViT's patch tokens [vision width]
  at::Tensor mask_token;            // [vision width], zeros at the start
  at::Tensor text_mask;             // [text width], N(0, 0.02) as the token embeddings
};
TORCH_MODULE(Siglip2Heads);

// Adds the heads to `model` (registered last: "siglip2.image_head.fc1.weight", ...). Names
// starting with "siglip2." are training-only: exports leave them out and loading weights into a
// model without them skips them (io/openclip.hpp).
Siglip2Heads add_siglip2_heads(ClipImpl& model, const Siglip2HeadOptions& options);
// Whether a state-dict name is one of those training-only tensors ("siglip2." first).
bool is_siglip2_tensor(const std::string& name);

}  // namespace clipper::model
