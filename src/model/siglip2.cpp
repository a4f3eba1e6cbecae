#include "clipper/model/siglip2.hpp"

#include <ATen/ATen.h>

#include <cmath>

#include "clipper/core/error.hpp"
#include "clipper/model/coca.hpp"

namespace clipper::model {

namespace {

void check_decoder_input(const ClipImpl& model, const at::Tensor& tokens) {
  core::require(model.is_coca(),
                "the LocCa decoder needs a model with a decoder (a multimodal_cfg section)");
  TORCH_CHECK(tokens.dim() == 2 && tokens.size(1) >= 2,
              "decoder_logits: token rows of at least 2 tokens expected, got ", tokens.sizes());
}

// The text tower's token outputs (TextTransformerImpl::forward_with_tokens) with the input
// embeddings at positions >= start replaced by mask_embedding, those positions not padding.
at::Tensor masked_text_tokens(ClipImpl& model, const at::Tensor& tokens, const at::Tensor& start,
                              const at::Tensor& mask_embedding) {
  auto& t = *model.text;
  const auto& spec = model.spec();
  const auto b = tokens.size(0), l = tokens.size(1), n = l + 1;
  const auto masked =
      at::arange(l, tokens.options()).view({1, l}).ge(start.to(tokens.device()).view({b, 1}));
  auto x = t.token_embedding->forward(tokens);
  const auto w = x.size(2);
  x = at::where(masked.unsqueeze(-1), mask_embedding.to(x.scalar_type()).view({1, 1, w}), x);
  x = at::cat({x, t.cls_emb.to(x.scalar_type()).view({1, 1, w}).expand({b, 1, w})}, 1);
  x = x + t.positional_embedding.narrow(0, 0, n).to(x.scalar_type());
  const auto valid = at::cat(
      {at::ones({b, 1}, masked.options()), tokens.ne(spec.text_pad_id).logical_or(masked)}, 1);
  auto mask = valid.view({b, 1, 1, n});
  if (!spec.text_no_causal_mask)
    mask = mask.logical_and(at::ones({n, n}, mask.options()).tril().view({1, 1, n, n}));
  return t.transformer->forward_masked(x, mask).narrow(1, 0, l);
}

// The decoder over the text tower's outputs x [B, L, width] (the last position dropped).
at::Tensor decode(ClipImpl& model, const at::Tensor& image_tokens, at::Tensor x, bool causal) {
  auto& d = *model.text_decoder;
  x = x.narrow(1, 0, x.size(1) - 1);
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

}  // namespace

at::Tensor decoder_logits(ClipImpl& model, const at::Tensor& image_tokens, const at::Tensor& tokens,
                          bool causal) {
  check_decoder_input(model, tokens);
  return decode(model, image_tokens, model.text->forward_with_tokens(tokens).second, causal);
}

at::Tensor parallel_decoder_logits(ClipImpl& model, const at::Tensor& image_tokens,
                                   const at::Tensor& tokens, const at::Tensor& target_start,
                                   const at::Tensor& mask_embedding) {
  check_decoder_input(model, tokens);
  const auto x = masked_text_tokens(model, tokens, target_start, mask_embedding);
  return decode(model, image_tokens, x, /*causal=*/false);
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

namespace clipper::model {

Siglip2HeadsImpl::Siglip2HeadsImpl(const ClipImpl& model, const Siglip2HeadOptions& o) {
  const auto& spec = model.spec();
  if (o.distill) {
    core::require(static_cast<bool>(model.visual_vit),
                  "SILC and masked prediction need an OpenCLIP ViT image tower");
    image_head = register_module("image_head",
                                 DistillHead(spec.embed_dim, o.hidden, o.bottleneck, o.prototypes));
    patch_head = register_module(
        "patch_head", DistillHead(spec.vision_width, o.hidden, o.bottleneck, o.prototypes));
  }
  if (o.masked) mask_token = register_parameter("mask_token", at::zeros({spec.vision_width}));
  if (o.parallel)
    text_mask = register_parameter("text_mask", at::empty({spec.text_width}).normal_(0.0, 0.02));
}

bool is_siglip2_tensor(const std::string& name) {
  return name.rfind("siglip2.", 0) == 0;
}

Siglip2Heads add_siglip2_heads(ClipImpl& model, const Siglip2HeadOptions& options) {
  return Siglip2Heads(model.register_module("siglip2", Siglip2Heads(model, options)));
}

}  // namespace clipper::model
