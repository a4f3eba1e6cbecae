#include "clipper/model/siglip2.hpp"

#include <ATen/ATen.h>

#include <cmath>

#include "clipper/core/error.hpp"
#include "clipper/model/coca.hpp"

namespace clipper::model {

at::Tensor decoder_logits(ClipImpl& model, const at::Tensor& image_tokens, const at::Tensor& tokens,
                          bool causal) {
  core::require(model.is_coca(),
                "the LocCa decoder needs a model with a decoder (a multimodal_cfg section)");
  TORCH_CHECK(tokens.dim() == 2 && tokens.size(1) >= 2,
              "decoder_logits: token rows of at least 2 tokens expected, got ", tokens.sizes());
  const auto l = tokens.size(1);
  auto& d = *model.text_decoder;
  at::Tensor x = model.text->forward_with_tokens(tokens).second.narrow(1, 0, l - 1);
  if (x.size(1) > d.context_length)
    throw core::InputError("the decoder reads at most multimodal_cfg.context_length = " +
                           std::to_string(d.context_length) + " text tokens, got " +
                           std::to_string(x.size(1)));
  const bool checkpoint = d.grad_checkpointing && d.is_training() && at::GradMode::is_enabled();
  for (std::int64_t i = 0; i < d.layers; ++i) {
    auto* self = d.resblocks->ptr<ResidualAttentionBlockImpl>(i).get();
    x = checkpoint ? checkpointed_block(*self, x, causal) : self->forward(x, causal);
    x = d.cross_attn->ptr<CrossAttentionBlockImpl>(i)->forward(x, image_tokens);
  }
  return at::matmul(d.ln_final->forward(x), d.text_projection.to(x.scalar_type()));
}

at::Tensor masked_patch_tokens(VisionTransformerImpl& vit, const at::Tensor& images,
                               const at::Tensor& mask, const at::Tensor& mask_token) {
  core::require(!vit.attn_pool,
                "masked prediction needs the ViT's per-patch outputs; this tower "
                "ends in an attentional pooler (vision_cfg.attentional_pool)");
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "images must be [B, 3, H, W], got ",
              images.sizes());
  auto x = vit.conv1->forward(images).flatten(2).transpose(1, 2);  // [B, N, width]
  const auto b = x.size(0), n = x.size(1), w = vit.width;
  TORCH_CHECK(n == vit.grid * vit.grid && mask.dim() == 2 && mask.size(0) == b &&
                  mask.size(1) == n && mask_token.numel() == w,
              "masked_patch_tokens: images of ", vit.grid * vit.patch_size, "x",
              vit.grid * vit.patch_size, ", mask [B, ", vit.grid * vit.grid, "] and mask_token [",
              w, "] expected, got ", images.sizes(), ", ", mask.sizes(), ", ", mask_token.sizes());
  x = at::where(mask.to(x.device()).unsqueeze(-1), mask_token.to(x.scalar_type()).view({1, 1, w}),
                x);
  const auto cls = vit.class_embedding.to(x.scalar_type()).view({1, 1, w}).expand({b, 1, w});
  x = at::cat({cls, x}, 1) + vit.positional_embedding.to(x.scalar_type());
  x = vit.ln_post->forward(vit.transformer->forward(vit.ln_pre->forward(x)));
  return x.narrow(1, 1, n);
}

DistillHeadImpl::DistillHeadImpl(std::int64_t in, std::int64_t hidden, std::int64_t bottleneck,
                                 std::int64_t k) {
  fc1 = register_module("fc1", Linear(in, hidden));
  fc2 = register_module("fc2", Linear(hidden, bottleneck));
  const double bound = 1.0 / std::sqrt(static_cast<double>(bottleneck));
  prototypes = register_parameter("prototypes", at::empty({k, bottleneck}).uniform_(-bound, bound));
}

at::Tensor DistillHeadImpl::forward(const at::Tensor& x) {
  auto z = fc2->forward(at::gelu(fc1->forward(x)));
  z = z / z.norm(2, {-1}, true).clamp_min(1e-6);
  return at::linear(z, prototypes.to(z.scalar_type()));
}

}  // namespace clipper::model
