#include "clipper/model/clip.hpp"

#include <algorithm>

#include "clipper/core/error.hpp"
#include "initializer.hpp"

namespace clipper::model {

namespace nn = torch::nn;

ClipImpl::ClipImpl(const ModelSpec& spec) : spec_(spec) {
  spec_.validate();
  visual = register_module("visual", make_image_tower(spec_));
  visual_vit = VisionTransformer(std::dynamic_pointer_cast<VisionTransformerImpl>(visual));
  visual_resnet = ModifiedResNet(std::dynamic_pointer_cast<ModifiedResNetImpl>(visual));
  visual_naflex = std::dynamic_pointer_cast<NaflexVitImpl>(visual);
  text = TextTransformer(spec_);
  if (spec_.custom_text)
    register_module("text", text);
  else
    text->register_parts(*this);
  token_embedding = text->token_embedding;
  positional_embedding = text->positional_embedding;
  transformer = text->transformer;
  ln_final = text->ln_final;
  text_projection = text->projection;
  if (spec_.coca) text_decoder = register_module("text_decoder", MultimodalDecoder(spec_));
  logit_scale = register_parameter("logit_scale", at::scalar_tensor(spec_.init_logit_scale));
  if (spec_.init_logit_bias)
    logit_bias = register_parameter("logit_bias", at::scalar_tensor(*spec_.init_logit_bias));
}

at::Tensor ClipImpl::encode_image(const at::Tensor& images, bool normalize) {
  auto f = visual->forward(images);
  return normalize ? f / f.norm(2, -1, true).clamp_min(1e-12) : f;
}

at::Tensor ClipImpl::encode_image(const at::Tensor& images, const at::Tensor& grids,
                                  bool normalize) {
  if (!grids.defined()) return encode_image(images, normalize);
  if (!visual_naflex)
    throw core::InputError(std::string("NaFlex patch batches need vision_cfg.tower naflex_vit; "
                                       "this model's image tower is ") +
                           name_of(spec_.image_tower));
  auto f = visual_naflex->forward_patches(naflex_batch_from_grids(images, grids));
  return normalize ? f / f.norm(2, -1, true).clamp_min(1e-12) : f;
}

at::Tensor ClipImpl::encode_text(const at::Tensor& tokens, bool normalize) {
  auto f = text->forward(tokens);
  return normalize ? f / f.norm(2, -1, true).clamp_min(1e-12) : f;
}

ClipOutput ClipImpl::forward(const at::Tensor& images, const at::Tensor& tokens,
                             const at::Tensor& grids) {
  ClipOutput out;
  out.image_features = encode_image(images, grids, true);
  out.text_features = encode_text(tokens, true);
  out.logit_scale = logit_scale.exp();
  if (logit_bias.defined()) out.logit_bias = logit_bias;
  return out;
}

namespace {
at::Tensor l2_normalize(const at::Tensor& f) {
  return f / f.norm(2, -1, true).clamp_min(1e-12);
}
void require_coca(const ModelSpec& spec) {
  if (!spec.coca)
    throw core::InputError("model '" + spec.name +
                           "' is not a CoCa model (its architecture has no multimodal_cfg)");
}
}  // namespace

std::pair<at::Tensor, at::Tensor> ClipImpl::encode_image_tokens(const at::Tensor& images) {
  auto [f, tokens] = visual->forward_with_tokens(images);
  return {l2_normalize(f), tokens};
}

CocaOutput ClipImpl::forward_coca(const at::Tensor& images, const at::Tensor& tokens) {
  require_coca(spec_);
  TORCH_CHECK(tokens.dim() == 2 && tokens.size(1) >= 2,
              "CoCa needs token rows of at least 2 tokens, got ", tokens.sizes());
  CocaOutput out;
  at::Tensor image_tokens, text_tokens;
  std::tie(out.image_features, image_tokens) = encode_image_tokens(images);
  at::Tensor text_f;
  std::tie(text_f, text_tokens) = text->forward_with_tokens(tokens);
  out.text_features = l2_normalize(text_f);
  const auto l = tokens.size(1);
  out.labels = tokens.narrow(1, 1, l - 1);
  out.logits = text_decoder->forward(image_tokens, text_tokens.narrow(1, 0, l - 1));
  out.logit_scale = logit_scale.exp();
  if (logit_bias.defined()) out.logit_bias = logit_bias;
  return out;
}

at::Tensor ClipImpl::caption_logits(const at::Tensor& image_tokens, const at::Tensor& tokens) {
  require_coca(spec_);
  return text_decoder->forward(image_tokens, text->forward_with_tokens(tokens).second);
}

// --- Initialization ----------------------------------------------------------------------------

void ClipImpl::init_parameters(std::uint64_t seed) {
  Initializer init(seed);
  visual->init_parameters(init);
  text->init_parameters(init);
  if (text_decoder) text_decoder->init_parameters(init);
  init.constant(logit_scale, spec_.init_logit_scale);
  if (logit_bias.defined()) init.constant(logit_bias, *spec_.init_logit_bias);
}

// --- Training switches -------------------------------------------------------------------------

void ClipImpl::set_grad_checkpointing(bool enable) {
  visual->set_grad_checkpointing(enable);
  transformer->grad_checkpointing = enable;
  if (text_decoder) text_decoder->grad_checkpointing = enable;
}

bool ClipImpl::grad_checkpointing() const {
  return transformer->grad_checkpointing;
}

void ClipImpl::set_patch_dropout(double fraction) {
  core::require(fraction >= 0.0 && fraction < 1.0,
                "patch dropout must be in [0, 1), got " + std::to_string(fraction));
  spec_.patch_dropout = fraction;
  visual->set_patch_dropout(fraction);
}

namespace {

// Freezes every tensor of `groups`, then unfreezes the last `unlocked` groups.
void lock_groups(const std::vector<std::vector<at::Tensor>>& groups, std::int64_t unlocked) {
  for (const auto& g : groups)
    for (const auto& t : g) t.set_requires_grad(false);
  const auto n = std::min<std::int64_t>(std::max<std::int64_t>(unlocked, 0),
                                        static_cast<std::int64_t>(groups.size()));
  for (auto i = static_cast<std::int64_t>(groups.size()) - n;
       i < static_cast<std::int64_t>(groups.size()); ++i)
    for (const auto& t : groups[i]) t.set_requires_grad(true);
}

}  // namespace

void ClipImpl::lock_image_tower(std::int64_t unlocked_groups, bool freeze_bn_stats) {
  lock_groups(visual->lock_groups(), unlocked_groups);
  visual->set_freeze_bn_stats(freeze_bn_stats);
}

void ClipImpl::lock_text_tower(std::int64_t unlocked_layers) {
  lock_groups(text->lock_groups(), unlocked_layers);
}

std::vector<std::pair<std::string, at::Tensor>> ClipImpl::state_dict() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : named_parameters(true)) out.emplace_back(p.key(), p.value());
  for (const auto& b : named_buffers(true)) out.emplace_back(b.key(), b.value());
  return out;
}

Clip create_model(const ModelSpec& spec, std::uint64_t seed) {
  Clip model(spec);
  model->init_parameters(seed);
  return model;
}

}  // namespace clipper::model
