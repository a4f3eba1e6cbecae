#pragma once
// SigLIP models both ways with Hugging Face transformers: `clipper export --format hf` writes
// SiglipModel (or Siglip2Model) files, DIR/config.json + DIR/model.safetensors, that
// transformers' from_pretrained loads with no missing or unexpected keys; and clipper reads such a
// folder's model.safetensors as weights (--weights, model.init_from), mapping the names back.
//
// One name map serves both directions (docs/models.md, "SigLIP in transformers"):
//   visual.trunk.patch_embed.proj        vision_model.embeddings.patch_embedding (Siglip2: a
//                                        Linear over patches flattened (row, column, channel))
//   visual.trunk.pos_embed [1, N, W]     vision_model.embeddings.position_embedding.weight [N, W]
//   visual.trunk.blocks.{i}              vision_model.encoder.layers.{i} (qkv split into q/k/v)
//   visual.trunk.norm                    vision_model.post_layernorm
//   visual.trunk.attn_pool.{latent, q + kv, proj, norm, mlp}
//                                        vision_model.head.{probe, attention.in_proj, out_proj,
//                                        layernorm, mlp}
//   [text.]token_embedding, positional_embedding, transformer.resblocks.{i}, ln_final
//                                        text_model.embeddings, encoder.layers.{i},
//                                        final_layer_norm
//   [text.]text_projection               text_model.head (no projection: the identity)
//   logit_scale, logit_bias (0-d)        logit_scale, logit_bias ([1])
// What SiglipModel cannot express (an OpenCLIP ViT or ResNet image tower, timm's avg pool, a
// causal text tower, another text pooling) is refused with an error naming it.
#include <optional>
#include <string>

#include "clipper/io/safetensors.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/model/model_spec.hpp"

namespace clipper::io {

// The transformers class an export writes (`clipper export --hf-class`).
enum class HfClass { clip, siglip, siglip2 };
const char* name_of(HfClass c);  // "CLIPModel", "SiglipModel", "Siglip2Model"
std::optional<HfClass> parse_hf_class(const std::string& name);
// CLIPModel for OpenCLIP's towers, SiglipModel for a timm (SigLIP) image trunk.
HfClass default_hf_class(const model::ModelSpec& spec);

// What transformers' SiglipModel / Siglip2Model cannot express for `spec`, one item a line ("" when
// it can).
std::string hf_siglip_unsupported(const model::ModelSpec& spec, HfClass cls);
// Throws InputError naming the model, the class and listing hf_siglip_unsupported.
void check_hf_siglip_exportable(const model::ModelSpec& spec, HfClass cls);

// The text tower's special ids in config.json (pad, bos, eos; unset: null).
struct HfTextIds {
  std::optional<std::int64_t> pad, bos, eos;
};
// The ids guessed when the model's tokenizer cannot say: CLIP's BPE's, T5's (a vocabulary of
// 32,000), Gemma's (256,000), none otherwise.
HfTextIds guessed_text_ids(const model::ModelSpec& spec);

// config.json's text (SiglipConfig / Siglip2Config with its text_config and vision_config). `ids`:
// the tokenizer's (the export's caller builds it); unset: guessed_text_ids.
std::string hf_siglip_config_json(const model::ModelSpec& spec, HfClass cls,
                                  const std::optional<HfTextIds>& ids = std::nullopt);

// The state dict in OpenCLIP names (model_state_dict) in transformers' names and shapes. Throws
// core::Error naming any tensor that has no place there.
TensorList hf_siglip_state_dict(const TensorList& openclip, const model::ModelSpec& spec,
                                HfClass cls);

// Whether `tensors` are a transformers SiglipModel / Siglip2Model state dict (text_model.head,
// vision_model.head.probe).
bool is_hf_siglip_state_dict(const TensorList& tensors);
// The reverse of hf_siglip_state_dict: transformers' names back to OpenCLIP's, for `spec`. The
// class follows the patch embedding's shape (a conv: Siglip; a Linear: Siglip2). When
// config.json lies beside `origin` (a from_pretrained folder), its sizes, head counts,
// activations and epsilons must be the spec's (InputError listing the differences: the shapes
// alone do not show them). InputError naming `origin` for a tensor with no place in the spec
// (a missing one is left to load_state_dict's strict check).
TensorList openclip_from_hf_siglip(const TensorList& hf, const model::ModelSpec& spec,
                                   const std::string& origin);

// Writes config.json, model.safetensors and preprocessor_config.json into `out_dir` after
// check_hf_siglip_exportable (the tokenizer files: the caller; `ids` as hf_siglip_config_json).
void export_hf_siglip(const model::Clip& model, const model::ModelSpec& spec, HfClass cls,
                      const std::string& out_dir,
                      const std::optional<HfTextIds>& ids = std::nullopt);

}  // namespace clipper::io
