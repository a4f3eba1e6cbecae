#pragma once
// The CLIP model: an image tower (`visual.`, built by the tower registry: OpenCLIP's ViT, the
// ModifiedResNet or a timm trunk) and a text tower (text_tower.hpp) whose parts sit at the top
// level as in OpenCLIP's CLIP (token_embedding, positional_embedding, transformer, ln_final,
// text_projection) or under `text.` (CustomTextCLIP, spec.custom_text), plus logit_scale and an
// optional logit_bias. named_parameters() and named_buffers() together are OpenCLIP's state
// dict, name for name.
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "clipper/model/coca.hpp"
#include "clipper/model/image_tower.hpp"
#include "clipper/model/model_spec.hpp"
#include "clipper/model/naflex_vit.hpp"
#include "clipper/model/text_tower.hpp"
#include "clipper/model/transformer.hpp"
#include "clipper/model/vision.hpp"

namespace clipper::model {

struct ClipOutput {
  at::Tensor image_features;  // [B, embed_dim], L2-normalized
  at::Tensor text_features;   // [B, embed_dim], L2-normalized
  at::Tensor logit_scale;     // exp(logit_scale), a scalar
  at::Tensor logit_bias;      // undefined when the model has none
};

// CoCa's forward (open_clip's CoCa.forward with output_labels): the caption logits predict
// labels = tokens[:, 1:] from the text tokens 0..L-2 and the image tokens.
struct CocaOutput {
  at::Tensor image_features;  // [B, embed_dim], L2-normalized
  at::Tensor text_features;   // [B, embed_dim], L2-normalized
  at::Tensor logits;          // [B, L - 1, vocab_size]
  at::Tensor labels;          // [B, L - 1], int64
  at::Tensor logit_scale;     // exp(logit_scale)
  at::Tensor logit_bias;      // undefined when the model has none
};

class ClipImpl : public torch::nn::Module {
 public:
  explicit ClipImpl(const ModelSpec& spec);

  // images: float [B, 3, H, W], already normalized.
  at::Tensor encode_image(const at::Tensor& images, bool normalize = true);
  // NaFlex: `grids` int64 [B, 2] defined, `images` are float patches [B, N, P*P*3] (the loader's
  // NaFlex batches, normalized), picture b's grids[b] patches first (naflex_batch_from_grids);
  // undefined grids: encode_image(images). A tower other than naflex_vit refuses patches.
  at::Tensor encode_image(const at::Tensor& images, const at::Tensor& grids, bool normalize);
  // tokens: int64 [B, L] with L <= context_length; pooled as spec.text_pool says: argmax, the
  // position of the largest id in each row (the CLIP tokenizer's end-of-text); eos, the first
  // spec.text_eos_id; first; last (SigLIP).
  at::Tensor encode_text(const at::Tensor& tokens, bool normalize = true);
  ClipOutput forward(const at::Tensor& images, const at::Tensor& tokens,
                     const at::Tensor& grids = {});

  // CoCa (spec.coca) only.
  CocaOutput forward_coca(const at::Tensor& images, const at::Tensor& tokens);
  // The normalized image features and the image tokens the decoder reads.
  std::pair<at::Tensor, at::Tensor> encode_image_tokens(const at::Tensor& images);
  // Caption logits [B, L, vocab] for every position of `tokens` [B, L] (no label shift), given
  // the image tokens of encode_image_tokens (generation).
  at::Tensor caption_logits(const at::Tensor& image_tokens, const at::Tensor& tokens);
  bool is_coca() const { return spec_.coca; }

  // OpenAI / OpenCLIP initialization from a seeded generator of its own (the global RNG is not
  // touched): same seed, same weights. Called by create_model.
  void init_parameters(std::uint64_t seed);

  // Gradient checkpointing per residual block, in both transformers (a ResNet's stages are not
  // checkpointed, as in OpenCLIP).
  void set_grad_checkpointing(bool enable = true);
  bool grad_checkpointing() const;
  // LiT: freezes the image tower, all but its last `unlocked_groups` groups (each tower's
  // lock_groups: ViT [conv1, class_embedding, positional_embedding, ln_pre], each block but the
  // last, [last block, ln_post], [proj]; ModifiedResNet [stem], layer1..4, [attnpool]; timm
  // [patch_embed, pos_embed], each block, [norm], [attn_pool]). freeze_bn_stats keeps the frozen
  // BatchNorm layers in eval mode.
  void lock_image_tower(std::int64_t unlocked_groups = 0, bool freeze_bn_stats = false);
  // Freezes the text tower, all but its last `unlocked_layers` groups: [token_embedding,
  // positional_embedding], each block but the last, [last block, ln_final], [text_projection].
  void lock_text_tower(std::int64_t unlocked_layers = 0);
  void set_patch_dropout(double fraction);

  // Parameters and persistent buffers with their OpenCLIP names, in registration order.
  std::vector<std::pair<std::string, at::Tensor>> state_dict() const;

  const ModelSpec& spec() const { return spec_; }
  bool is_resnet() const { return spec_.is_resnet(); }

  std::shared_ptr<ImageTowerImpl> visual;        // registered as "visual"
  VisionTransformer visual_vit{nullptr};         // the same tower when it is OpenCLIP's ViT
  ModifiedResNet visual_resnet{nullptr};         // the same tower when it is a ModifiedResNet
  std::shared_ptr<NaflexVitImpl> visual_naflex;  // the same tower when it is a naflex_vit
  TextTransformer text{nullptr};                 // registered as "text" when spec.custom_text
  // The text tower's parts (the same tensors and modules as `text`'s).
  torch::nn::Embedding token_embedding{nullptr};
  at::Tensor positional_embedding;
  Transformer transformer{nullptr};
  LayerNorm ln_final{nullptr};
  at::Tensor text_projection;  // [width, embed_dim]; undefined when it is a Linear or none
  MultimodalDecoder text_decoder{nullptr};  // CoCa: registered as "text_decoder"
  at::Tensor logit_scale;
  at::Tensor logit_bias;  // undefined unless spec.init_logit_bias is set

 private:
  ModelSpec spec_;
};
TORCH_MODULE(Clip);

// A new model with OpenAI initialization, deterministic for a seed (on the CPU, fp32).
Clip create_model(const ModelSpec& spec, std::uint64_t seed);

}  // namespace clipper::model
