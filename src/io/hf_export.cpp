#include "clipper/io/hf_export.hpp"

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/core/version.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/model/transformer.hpp"

namespace clipper::io {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

// transformers' CLIP text model pools at the largest id when text_config.eos_token_id is 2 (its
// legacy rule, clipper's "argmax" pool_type) and at the first eos_token_id otherwise.
constexpr std::int64_t kArgmaxEosId = 2;

std::string act_name(const model::ModelSpec& s) {
  return s.quick_gelu ? "quick_gelu" : "gelu";
}

json tower_common(const model::ModelSpec& s, std::int64_t width, std::int64_t heads,
                  std::int64_t layers, double mlp_ratio) {
  json c;
  c["hidden_size"] = width;
  c["intermediate_size"] = model::mlp_width(width, mlp_ratio);
  c["num_attention_heads"] = heads;
  c["num_hidden_layers"] = layers;
  c["hidden_act"] = act_name(s);
  c["layer_norm_eps"] = 1e-5;
  c["projection_dim"] = s.embed_dim;
  return c;
}

// Moves one tensor of `from` into `out` under a new name, recording that it was used.
class Renamer {
 public:
  explicit Renamer(const TensorList& from) {
    for (const auto& [k, t] : from) src_.emplace(k, t);
  }
  at::Tensor take(const std::string& name) {
    const auto it = src_.find(name);
    if (it == src_.end()) throw core::Error("hf export: the model has no tensor '" + name + "'");
    used_.insert(name);
    return it->second;
  }
  void put(const std::string& to, const std::string& from) { out.emplace_back(to, take(from)); }
  void put_t(const std::string& to, const std::string& from) {
    out.emplace_back(to, take(from).t().contiguous());
  }
  // in_proj [3W, W] / [3W] into q, k, v.
  void put_qkv(const std::string& to, const std::string& from) {
    for (const char* kind : {"weight", "bias"}) {
      const auto both = take(from + ".in_proj_" + kind);
      const auto w = both.size(0) / 3;
      const char* names[] = {"q_proj", "k_proj", "v_proj"};
      for (int i = 0; i < 3; ++i)
        out.emplace_back(to + "." + names[i] + "." + kind, both.narrow(0, i * w, w).contiguous());
    }
  }
  std::vector<std::string> unused() const {
    std::vector<std::string> left;
    for (const auto& [k, t] : src_)
      if (!used_.count(k)) left.push_back(k);
    return left;
  }
  TensorList out;

 private:
  std::map<std::string, at::Tensor> src_;
  std::set<std::string> used_;
};

void put_layer_norm(Renamer& r, const std::string& to, const std::string& from) {
  r.put(to + ".weight", from + ".weight");
  r.put(to + ".bias", from + ".bias");
}

void put_encoder(Renamer& r, const std::string& to, const std::string& from, std::int64_t layers) {
  for (std::int64_t i = 0; i < layers; ++i) {
    const std::string a = from + ".resblocks." + std::to_string(i);
    const std::string b = to + ".layers." + std::to_string(i);
    put_layer_norm(r, b + ".layer_norm1", a + ".ln_1");
    r.put_qkv(b + ".self_attn", a + ".attn");
    r.put(b + ".self_attn.out_proj.weight", a + ".attn.out_proj.weight");
    r.put(b + ".self_attn.out_proj.bias", a + ".attn.out_proj.bias");
    put_layer_norm(r, b + ".layer_norm2", a + ".ln_2");
    for (const auto& [hf, oc] : {std::pair{"fc1", "c_fc"}, std::pair{"fc2", "c_proj"}}) {
      r.put(b + ".mlp." + hf + ".weight", a + ".mlp." + oc + ".weight");
      r.put(b + ".mlp." + hf + ".bias", a + ".mlp." + oc + ".bias");
    }
  }
}

// CLIPImageProcessor's settings for clipper's preprocessing; false when it has none (resize mode
// longest: CLIPImageProcessor does not pad).
bool write_preprocessor(const model::ModelSpec& s, const fs::path& dir) {
  if (s.resize_mode == model::ResizeMode::longest) return false;
  const bool shortest = s.resize_mode == model::ResizeMode::shortest;
  json p;
  p["image_processor_type"] = "CLIPImageProcessor";
  p["do_resize"] = true;
  p["size"] = shortest ? json{{"shortest_edge", s.image_size}}
                       : json{{"height", s.image_size}, {"width", s.image_size}};
  p["resample"] = s.interpolation == model::Interpolation::bilinear ? 2 : 3;  // PIL's numbers
  p["do_center_crop"] = true;
  p["crop_size"] = {{"height", s.image_size}, {"width", s.image_size}};
  p["do_rescale"] = true;
  p["rescale_factor"] = 1.0 / 255.0;
  p["do_normalize"] = true;
  p["image_mean"] = s.mean;
  p["image_std"] = s.std;
  p["do_convert_rgb"] = true;
  core::write_file_atomic((dir / "preprocessor_config.json").string(), p.dump(2) + "\n");
  return true;
}

}  // namespace

std::string hf_unsupported(const model::ModelSpec& s) {
  std::string why;
  const auto add = [&why](const std::string& line) { why += "\n  " + line; };
  if (s.is_resnet())
    add("the image tower is a ModifiedResNet (vision_cfg.layers is a list): transformers' "
        "CLIPModel has ViT image towers only");
  if (s.image_tower == model::ImageTowerKind::naflex_vit)
    add("the image tower is NaFlex (vision_cfg.tower naflex_vit): transformers' CLIPModel takes "
        "square pictures (--hf-class Siglip2Model writes this model)");
  if (s.image_tower == model::ImageTowerKind::timm_vit)
    add("the image tower is timm's SigLIP trunk (vision_cfg.tower timm_vit): transformers' "
        "CLIPModel has OpenCLIP's ViT only (--hf-class SiglipModel writes this model)");
  if (s.text_pool == model::TextPool::eos && s.text_eos_id == kArgmaxEosId)
    add("text_cfg.pool_type 'eos' with eos_id 2: transformers reads eos_token_id 2 as 'pool at "
        "the largest id'");
  else if (s.text_pool != model::TextPool::argmax && s.text_pool != model::TextPool::eos)
    add(std::string("text_cfg.pool_type '") + model::name_of(s.text_pool) +
        "': transformers' CLIP text model pools at the end-of-text token only");
  if (s.tokenizer != "clip")
    add("tokenizer '" + s.tokenizer +
        "': the export writes CLIPTokenizer files, made from the CLIP BPE vocabulary only");
  if (s.init_logit_bias)
    add("a logit_bias (a SigLIP model): transformers' CLIPModel has none, so its logits would "
        "differ");
  return why;
}

std::string hf_config_json(const model::ModelSpec& s) {
  json text = tower_common(s, s.text_width, s.text_heads, s.text_layers, s.text_mlp_ratio);
  text["max_position_embeddings"] = s.context_length;
  text["vocab_size"] = s.vocab_size;
  text["bos_token_id"] = 49406;  // the CLIP vocabulary's <|startoftext|>
  text["eos_token_id"] = s.text_pool == model::TextPool::argmax ? kArgmaxEosId : s.text_eos_id;
  text["pad_token_id"] = 1;
  text["model_type"] = "clip_text_model";
  json vision =
      tower_common(s, s.vision_width, s.vision_heads(), s.vision_layers, s.vision_mlp_ratio);
  vision["image_size"] = s.image_size;
  vision["patch_size"] = s.patch_size;
  vision["num_channels"] = 3;
  vision["model_type"] = "clip_vision_model";
  json root;
  root["architectures"] = {"CLIPModel"};
  root["model_type"] = "clip";
  root["projection_dim"] = s.embed_dim;
  root["logit_scale_init_value"] = s.init_logit_scale;
  root["text_config"] = text;
  root["vision_config"] = vision;
  root["dtype"] = "float32";
  root["clipper"] = {{"model", s.name}, {"version", core::version()}};
  return root.dump(2) + "\n";
}

TensorList hf_state_dict(const TensorList& openclip, const model::ModelSpec& s) {
  Renamer r(openclip);
  const std::string v = "vision_model.", t = "text_model.";
  r.put(v + "embeddings.class_embedding", "visual.class_embedding");
  r.put(v + "embeddings.patch_embedding.weight", "visual.conv1.weight");
  r.put(v + "embeddings.position_embedding.weight", "visual.positional_embedding");
  put_layer_norm(r, v + "pre_layrnorm", "visual.ln_pre");  // sic: transformers' spelling
  put_encoder(r, v + "encoder", "visual.transformer", s.vision_layers);
  put_layer_norm(r, v + "post_layernorm", "visual.ln_post");
  r.put_t("visual_projection.weight", "visual.proj");
  r.put(t + "embeddings.token_embedding.weight", "token_embedding.weight");
  r.put(t + "embeddings.position_embedding.weight", "positional_embedding");
  put_encoder(r, t + "encoder", "transformer", s.text_layers);
  put_layer_norm(r, t + "final_layer_norm", "ln_final");
  r.put_t("text_projection.weight", "text_projection");
  r.put("logit_scale", "logit_scale");
  const auto left = r.unused();
  if (!left.empty()) {
    std::string names;
    for (const auto& n : left) names += (names.empty() ? "" : ", ") + n;
    throw core::InputError("model '" + s.name +
                           "' has tensors transformers' CLIPModel has no place for: " + names);
  }
  return std::move(r.out);
}

void check_hf_exportable(const model::ModelSpec& spec) {
  const std::string why = hf_unsupported(spec);
  if (!why.empty())
    throw core::InputError("model '" + spec.name +
                           "' cannot be exported for transformers' CLIPModel:" + why +
                           "\n(--format openclip exports any clipper model)");
}

void export_hf(const model::Clip& m, const model::ModelSpec& spec, const std::string& out_dir) {
  check_hf_exportable(spec);
  const auto tensors = hf_state_dict(merged_state_dict(*m), spec);
  const fs::path dir(out_dir);
  fs::create_directories(dir);
  save_safetensors((dir / "model.safetensors").string(), tensors, {{"format", "pt"}});
  core::write_file_atomic((dir / "config.json").string(), hf_config_json(spec));
  if (!write_preprocessor(spec, dir))
    CLIPPER_WARN("hf export: no preprocessor_config.json (CLIPImageProcessor has no resize mode '"
                 << model::name_of(spec.resize_mode) << "': it does not pad to a square)");
  if (spec.patch_dropout > 0.0)
    CLIPPER_INFO("hf export: patch_dropout " << spec.patch_dropout
                                             << " acts in training only; inference is the same");
  CLIPPER_INFO("exported " << spec.name << " for transformers (CLIPModel) to " << out_dir);
}

}  // namespace clipper::io
