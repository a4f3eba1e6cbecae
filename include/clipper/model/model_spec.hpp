#pragma once
// An architecture as data: configs/models/<name>.yaml, read into a ModelSpec. The YAML mirrors
// OpenCLIP's model_configs/<name>.json (embed_dim, quick_gelu, vision_cfg, text_cfg, ...), so a
// config can be checked against OpenCLIP's field by field, plus clipper's `tokenizer` and
// `preprocess_cfg` (OpenCLIP keeps those elsewhere), and, for timm trunks, the sizes timm's
// model name implies (width, layers, ...), written out. Every key is declared once, in the field
// table of model_spec.cpp (its YAML path, its member here, what it means).
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "clipper/model/preprocess.hpp"
#include "clipper/model/spec_choices.hpp"

namespace clipper::model {

struct ModelSpec {
  std::string name;  // the file's base name, e.g. "ViT-B-32"
  std::string path;  // where it was read from ("" when built in code)
  std::int64_t embed_dim = 512;

  // Image tower: vision_cfg.tower, or inferred: a ModifiedResNet when vision_cfg.layers is a
  // list, timm_vit when vision_cfg.timm_model_name is set, else OpenCLIP's ViT.
  ImageTowerKind image_tower = ImageTowerKind::vit;
  std::string timm_model_name;  // timm_vit: the timm model it equals (open_clip's config key)
  std::int64_t image_size = 224;
  std::int64_t vision_width = 768;
  std::int64_t vision_layers = 12;                 // ViT blocks
  std::vector<std::int64_t> vision_resnet_layers;  // ModifiedResNet: bottlenecks per stage (4)
  std::int64_t patch_size = 16;                    // ViT only
  std::int64_t vision_head_width = 64;  // heads = width / head_width (ResNet: width*32/hw)
  double vision_mlp_ratio = 4.0;
  double patch_dropout = 0.0;                // fraction of patches dropped in training (ViT only)
  VisionPool vision_pool = VisionPool::map;  // timm_vit: open_clip's timm_pool
  Activation vision_act = Activation::gelu;  // timm_vit (the OpenCLIP ViT follows quick_gelu)
  double vision_norm_eps = 1e-5;             // LayerNorm eps of the image tower
  // naflex_vit: the learned position table is pos_embed_grid x pos_embed_grid, resized to each
  // image's patch grid with this interpolation (antialiased, as timm's NaFlexEmbeds).
  std::int64_t pos_embed_grid = 16;
  // naflex_vit: padded batches run with several pictures packed into each sequence row and a
  // block-diagonal attention mask (the same features; padding waste near 0). false: padded.
  bool naflex_packing = true;
  Interpolation pos_embed_interp = Interpolation::bilinear;
  // OpenCLIP's ViT with an attentional pooler (vision_cfg.attentional_pool, CoCa): learned
  // queries attend to the ViT's tokens; the first output is the pooled feature, the others the
  // image tokens the CoCa decoder reads.
  bool vision_attn_pool = false;
  std::int64_t vision_attn_pool_queries = 256;  // vision_cfg.attn_pooler_queries
  std::int64_t vision_attn_pool_heads = 8;      // vision_cfg.attn_pooler_heads
  bool vision_output_tokens = false;            // vision_cfg.output_tokens (CoCa sets it)

  // Text tower.
  std::int64_t context_length = 77;
  std::int64_t vocab_size = 49408;
  std::int64_t text_width = 512;
  std::int64_t text_heads = 8;
  std::int64_t text_layers = 12;
  double text_mlp_ratio = 4.0;
  // Which token's output is the text feature (OpenCLIP's text_cfg.pool_type; preprocess.hpp).
  TextPool text_pool = TextPool::argmax;
  std::int64_t text_eos_id = 2;
  // OpenCLIP's custom_text: the text tower's parameters sit under `text.` (TextTransformer)
  // instead of at the top level (CLIP).
  bool custom_text = false;
  bool text_no_causal_mask = false;  // bidirectional attention (SigLIP)
  bool text_proj_bias = false;       // text_projection is a Linear with bias (SigLIP)
  bool text_proj_none = false;       // proj_type none: no projection (width == embed_dim)
  Activation text_act = Activation::gelu;
  double text_norm_eps = 1e-5;
  // CoCa's text tower: a learned CLS embedding appended after the tokens (text_cfg.embed_cls),
  // pooled at that position; the key mask hides positions after pad tokens (text_cfg.pad_id).
  bool text_embed_cls = false;
  std::int64_t text_pad_id = 0;
  bool text_output_tokens = false;  // text_cfg.output_tokens (CoCa sets it)
  std::string tokenizer = "clip";   // "clip", "sentencepiece:PATH" or "hf:NAME_OR_PATH"
  // How an hf: tokenizer cleans text first (open_clip's tokenizer_kwargs.clean).
  std::string tokenizer_clean = "whitespace";

  // CoCa (a multimodal_cfg section): the text decoder, causal self-attention and cross-attention
  // over the image tokens in each of its layers, projecting to text_cfg.vocab_size logits.
  // open_clip reads only width, heads, layers and context_length of multimodal_cfg (the decoder's
  // MLP ratio is 4 and its output the text tower's vocabulary whatever the file says).
  bool coca = false;
  std::int64_t decoder_width = 512;
  std::int64_t decoder_heads = 8;
  std::int64_t decoder_layers = 12;
  std::int64_t decoder_context_length = 76;

  bool quick_gelu = false;
  double init_logit_scale = 2.659260036932778;  // ln(1 / 0.07)
  std::optional<double> init_logit_bias;        // SigLIP: -10

  // Preprocessing (OpenCLIP's preprocess_cfg).
  std::array<double, 3> mean{0.48145466, 0.4578275, 0.40821073};
  std::array<double, 3> std{0.26862954, 0.26130258, 0.27577711};
  Interpolation interpolation = Interpolation::bicubic;
  ResizeMode resize_mode = ResizeMode::shortest;
  // NaFlex (naflex_vit towers): > 0, every picture keeps its aspect ratio and is resized to the
  // largest patch grid of at most this many patches (timm's max_seq_len, transformers'
  // max_num_patches), fed as a patch sequence; 0: square pictures of image_size.
  std::int64_t max_seq_len = 0;
  bool naflex_inputs() const { return max_seq_len > 0; }

  bool is_resnet() const { return image_tower == ImageTowerKind::resnet; }
  // Text positions the tower embeds: context_length, plus one for CoCa's CLS embedding.
  std::int64_t text_positions() const { return context_length + (text_embed_cls ? 1 : 0); }
  // Width of the image tokens a CoCa decoder reads: embed_dim after an attentional pooler, the
  // ViT's width without.
  std::int64_t image_token_width() const { return vision_attn_pool ? embed_dim : vision_width; }
  // The activations the towers use: quick_gelu (OpenAI's) overrides both.
  Activation image_activation() const { return quick_gelu ? Activation::quick_gelu : vision_act; }
  Activation text_activation() const { return quick_gelu ? Activation::quick_gelu : text_act; }
  std::int64_t vision_heads() const;
  // Checks the values hang together (divisibility, positive sizes); throws InputError naming
  // the spec and the field.
  void validate() const;
};

// OpenCLIP's --force-image-size, --force-quick-gelu and --force-patch-dropout: overrides of the
// architecture file (config keys model.force_*). 0 / false / negative keep the file's value.
struct SpecOverrides {
  std::int64_t image_size = 0;
  bool quick_gelu = false;
  double patch_dropout = -1.0;
};
// Applies `o` to `spec` and validates the result; an error names the model.force_* key.
void apply_overrides(ModelSpec& spec, const SpecOverrides& o);

// `name_or_path`: a name (configs/models/<name>.yaml found on the search path) or a path to a
// .yaml file. Search path: $CLIPPER_MODEL_DIRS (':'-separated), <exe dir>/../share/clipper/
// configs/models, then the source tree's configs/models. An unknown name lists the known ones.
ModelSpec load_model_spec(const std::string& name_or_path);
// The init a SigLIP loss needs, as OpenCLIP's --siglip sets it: logit scale ln 10 and logit bias
// -10, over whatever the file says (open_clip_train's main.py passes both as model kwargs, which
// create_model applies after the architecture file: a file setting only init_logit_bias, as
// open_clip's ViT-B-16-SigLIP.json, still starts at ln 10). Weights loaded afterwards
// (model.init_from, --weights) overwrite both.
void use_siglip_init(ModelSpec& spec);
// Parses one YAML document; `origin` names it in errors.
ModelSpec parse_model_spec(const std::string& yaml_text, const std::string& name,
                           const std::string& origin);
// Every name found on the search path, sorted (a name found twice: the first folder wins).
std::vector<std::string> list_model_specs();
std::vector<std::string> model_spec_dirs();

}  // namespace clipper::model
