#pragma once
// Weights in and out in OpenCLIP's format. clipper's parameter names are OpenCLIP's state-dict
// names, so export writes the state dict as it is and import checks it strictly.
//   export_openclip: DIR/open_clip_model.safetensors + DIR/open_clip_config.json
//     ({"model_cfg": OpenCLIP's model config, "preprocess_cfg": size/mean/std/interpolation/
//     resize_mode}); open_clip.create_model("local-dir:DIR") or
//     open_clip.create_model(NAME, pretrained=DIR/open_clip_model.safetensors) loads it.
//   load_openclip_weights: a .safetensors file or a .pt / .pth / .bin state dict saved by
//     torch.save (read with LibTorch's pickle loader); a "state_dict" entry is used when present
//     and a leading "module." is stripped.
#include <optional>
#include <string>
#include <vector>

#include "clipper/io/safetensors.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/model/model_spec.hpp"

namespace clipper::config {
struct Config;
}

namespace clipper::io {

// The model a run's config describes: model.name's architecture with the run's model.force_*
// overrides (image size, QuickGELU, patch dropout) and, for loss.kind siglip, the SigLIP init.
// The one description of a run's model: training (session), evaluation and embedding of its
// checkpoints (described_model) and their export (load_checkpoint_model) all build it here.
// model.name must be set.
model::ModelSpec run_model_spec(const config::Config& run);

// OpenCLIP's model_cfg for a spec, as JSON text (what open_clip's CLIP(**model_cfg) takes).
std::string openclip_model_cfg_json(const model::ModelSpec& spec);
// The whole open_clip_config.json text.
std::string openclip_config_json(const model::ModelSpec& spec);

// The model's parameters and persistent buffers (OpenCLIP names), as CPU tensors.
TensorList model_state_dict(const model::ClipImpl& model);

// model_state_dict with any LoRA adapters merged into their weights (W + scale * B A) and
// dropped: a plain model, what the exports write.
TensorList merged_state_dict(const model::ClipImpl& model);

// Writes merged_state_dict (no adapters: open_clip loads a plain model) and the config.
void export_openclip(const model::Clip& model, const model::ModelSpec& spec,
                     const std::string& out_dir);

// A state-dict key without DDP's leading "module.".
std::string strip_module(const std::string& key);
// "[3, 224, 224]", for messages about tensor shapes.
std::string shape_text(at::IntArrayRef shape);

// Reads a state dict from .safetensors or a torch.save file (a "state_dict" entry is used when
// present; a leading "module." is stripped).
TensorList read_state_dict(const std::string& path);

// What a load did: the tensors copied into the model, their values, and the model's tensors the
// weights did not have (left at their init, with a warning: a missing logit_bias).
struct LoadReport {
  std::int64_t tensors = 0, values = 0;
  std::vector<std::string> left_at_init;
};

// Copies `tensors` into the model (converting dtype, onto the model's device). Strict: throws
// InputError listing missing keys, unexpected keys and shape mismatches. As OpenCLIP does, a
// scalar/[1] logit_scale or logit_bias is reshaped, and a missing logit_bias is set to 0.
LoadReport load_state_dict(model::ClipImpl& model, const TensorList& tensors,
                           const std::string& origin);

// Fine-tuning at another size, as open_clip's load_checkpoint does. resize_image_pos_embed is its
// resize_pos_embed: [1 + g*g, W] to [1 + grid*grid, W], the class token kept and the g x g grid
// resized bicubically with antialiasing (align_corners false). resize_text_pos_embed is its
// resize_text_pos_embed: [L, W] to [length, W], linear without antialiasing. Computed in fp32,
// returned in the input's dtype. `origin` names the weights in errors.
at::Tensor resize_image_pos_embed(const at::Tensor& pos, std::int64_t grid,
                                  const std::string& origin);
at::Tensor resize_text_pos_embed(const at::Tensor& pos, std::int64_t length);
// Resizes `tensors`' visual.positional_embedding (ViT models) and positional_embedding to the
// model's sizes when only their length differs; anything else is left for load_state_dict to
// report.
void resize_pos_embeds(const model::ClipImpl& model, TensorList& tensors,
                       const std::string& origin);

// read_state_dict, resize_pos_embeds, then load_state_dict.
LoadReport load_openclip_weights(model::Clip& model, const std::string& path);

// Resolves --weights: a folder with open_clip_model.safetensors (an export) or model.safetensors
// (a checkpoint), or a weights file.
std::string resolve_weights(const std::string& path);

// The model that weights describe, for eval and embed without --model / model.name. `weights` is
// what resolve_weights returned: an export's open_clip_model.safetensors, whose
// open_clip_config.json (written by clipper: it has a "clipper" section) holds the architecture,
// the preprocessing and the tokenizer; or a checkpoint's model.safetensors, whose config.yaml
// names the model (run_model_spec: its overrides and SigLIP init). nullopt when the weights do
// not say.
std::optional<model::ModelSpec> described_model(const std::string& weights);
// "" when `a` and `b` are the same architecture (OpenCLIP's model_cfg, init values aside), else
// the fields that differ, e.g. "vision_cfg.width 192 vs 16, embed_dim 128 vs 64".
std::string architecture_difference(const model::ModelSpec& a, const model::ModelSpec& b);

// The weight average of a training run (train.ema_decay): a checkpoint folder's ema.safetensors
// holds the averaged tensors (what training changes); the rest are model.safetensors'. Replaces
// those entries of `tensors` (a checkpoint's model state dict) with the averaged ones. InputError
// when the folder has no ema.safetensors, or when it names a tensor `tensors` lacks.
void overlay_checkpoint_ema(TensorList& tensors, const std::string& checkpoint_dir);
// eval.use_ema with --weights: `weights` is resolve_weights' answer for a checkpoint folder
// (its model.safetensors, already loaded into `model`); loads the folder's averages over it.
void load_checkpoint_ema(model::Clip& model, const std::string& weights);
// The model `clipper export` reads: `checkpoint` is a checkpoint folder (model.safetensors +
// config.yaml, whose model.name and model.force_* keys give the architecture) or a .safetensors
// file with `model_name` given; a non-empty `model_name` overrides the folder's. Its spec (SigLIP
// init when the run or the weights have a logit_bias) goes to `spec`. With `ema`, the checkpoint
// folder's weight average (overlay_checkpoint_ema) instead of its weights.
model::Clip load_checkpoint_model(const std::string& checkpoint, const std::string& model_name,
                                  model::ModelSpec* spec, bool ema = false);

// `clipper export`: `checkpoint` is a checkpoint folder (model.safetensors + config.yaml, whose
// model.name names the architecture) or a .safetensors file with `model_name` given. A non-empty
// `model_name` overrides the folder's. Writes the OpenCLIP files into `out_dir`; with `ema`, the
// checkpoint's weight average (overlay_checkpoint_ema) instead of its weights.
void export_checkpoint_openclip(const std::string& checkpoint, const std::string& model_name,
                                const std::string& out_dir, bool ema = false);

}  // namespace clipper::io
