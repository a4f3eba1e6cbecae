#pragma once
// Export for Hugging Face transformers: DIR/config.json, DIR/model.safetensors (transformers'
// CLIPModel names), the tokenizer files vocab.json, merges.txt, tokenizer_config.json and
// special_tokens_map.json (made from the same CLIP BPE vocabulary as clipper's "clip" tokenizer)
// and preprocessor_config.json; transformers.CLIPModel.from_pretrained(DIR) and
// CLIPTokenizer.from_pretrained(DIR) load it as it is.
//
// transformers' CLIP has ViT towers with a class token, LayerNorms of eps 1e-5, a GELU or
// QuickGELU MLP and the text feature at the end-of-text token; what else a clipper model can be
// (a ModifiedResNet, another text pooling, a SigLIP logit bias, a SentencePiece tokenizer) is
// refused with an error naming it.
#include <string>

#include "clipper/io/safetensors.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/model/model_spec.hpp"

namespace clipper::io {

// What transformers' CLIPModel cannot express for `spec`, one item a line ("" when it can).
std::string hf_unsupported(const model::ModelSpec& spec);

// Throws InputError naming the model and listing hf_unsupported(spec), when not empty.
void check_hf_exportable(const model::ModelSpec& spec);

// config.json's text (CLIPConfig with its text_config and vision_config).
std::string hf_config_json(const model::ModelSpec& spec);

// The state dict in OpenCLIP names (`model_state_dict`) renamed and reshaped to transformers':
// in_proj split into q/k/v, proj and text_projection transposed into Linear weights. Throws
// core::Error naming any tensor that has no place there.
TensorList hf_state_dict(const TensorList& openclip, const model::ModelSpec& spec);

// Writes config.json, model.safetensors and preprocessor_config.json into `out_dir` after
// check_hf_exportable (the tokenizer files: tokenizer::write_hf_clip_tokenizer).
void export_hf(const model::Clip& model, const model::ModelSpec& spec, const std::string& out_dir);

}  // namespace clipper::io
