#include "clipper/io/openclip.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "clipper/config/loader.hpp"
#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/core/version.hpp"
#include "clipper/io/hf_siglip.hpp"
#include "clipper/model/lora.hpp"
#include "clipper/model/siglip2.hpp"
#include "sharded_checkpoint.hpp"
#include "torch_pickle.hpp"

namespace clipper::io {
namespace {

using core::InputError;
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

json vision_cfg(const model::ModelSpec& s) {
  json vision;
  vision["image_size"] = s.image_size;
  switch (s.image_tower) {
    case model::ImageTowerKind::timm_vit:
    case model::ImageTowerKind::naflex_vit:
      // open_clip builds the trunk from timm's name; its sizes are timm's (see the clipper block
      // of open_clip_config.json).
      vision["timm_model_name"] = s.timm_model_name;
      vision["timm_model_pretrained"] = false;
      vision["timm_pool"] = model::name_of(s.vision_pool);
      vision["timm_proj"] = "none";
      if (s.patch_dropout > 0.0) vision["patch_dropout"] = s.patch_dropout;
      return vision;
    case model::ImageTowerKind::resnet:
      vision["layers"] = s.vision_resnet_layers;
      vision["width"] = s.vision_width;
      vision["patch_size"] = nullptr;
      break;
    default:
      vision["layers"] = s.vision_layers;
      vision["width"] = s.vision_width;
      vision["patch_size"] = s.patch_size;
      if (s.patch_dropout > 0.0) vision["patch_dropout"] = s.patch_dropout;
      if (s.vision_attn_pool) {
        vision["attentional_pool"] = true;
        vision["attn_pooler_queries"] = s.vision_attn_pool_queries;
        vision["attn_pooler_heads"] = s.vision_attn_pool_heads;
      }
      if (s.vision_output_tokens || s.coca) vision["output_tokens"] = true;
  }
  vision["head_width"] = s.vision_head_width;
  vision["mlp_ratio"] = s.vision_mlp_ratio;
  return vision;
}

// open_clip's text_cfg; the keys a CLIP config never had appear only when they differ from
// open_clip's defaults, so the 2021 configs stay as OpenCLIP ships them.
json text_cfg(const model::ModelSpec& s) {
  json text;
  text["context_length"] = s.context_length;
  text["vocab_size"] = s.vocab_size;
  if (s.tokenizer.rfind("hf:", 0) == 0) {
    text["hf_tokenizer_name"] = s.tokenizer.substr(3);
    text["tokenizer_kwargs"] = {{"clean", s.tokenizer_clean}};
  }
  text["width"] = s.text_width;
  text["heads"] = s.text_heads;
  text["layers"] = s.text_layers;
  text["mlp_ratio"] = s.text_mlp_ratio;
  if (s.text_no_causal_mask) text["no_causal_mask"] = true;
  if (s.text_proj_bias) text["proj_bias"] = true;
  if (s.text_proj_none) text["proj_type"] = "none";
  if (s.text_pool != model::TextPool::argmax) text["pool_type"] = model::name_of(s.text_pool);
  if (s.text_pool == model::TextPool::eos) text["eos_id"] = s.text_eos_id;
  if (s.text_norm_eps != 1e-5) text["norm_kwargs"] = {{"eps", s.text_norm_eps}};
  if (s.text_act == model::Activation::gelu_tanh) text["act_kwargs"] = {{"approximate", "tanh"}};
  if (s.text_embed_cls) text["embed_cls"] = true;
  if (s.text_pad_id != 0) text["pad_id"] = s.text_pad_id;
  if (s.text_output_tokens || s.coca) text["output_tokens"] = true;
  return text;
}

// CoCa's decoder: the keys open_clip's MultimodalTransformer is built from.
json multimodal_cfg(const model::ModelSpec& s) {
  return {{"context_length", s.decoder_context_length},
          {"vocab_size", s.vocab_size},
          {"width", s.decoder_width},
          {"heads", s.decoder_heads},
          {"layers", s.decoder_layers}};
}

json model_cfg(const model::ModelSpec& s) {
  json cfg;
  cfg["embed_dim"] = s.embed_dim;
  cfg["quick_gelu"] = s.quick_gelu;
  cfg["init_logit_scale"] = s.init_logit_scale;
  if (s.init_logit_bias) cfg["init_logit_bias"] = *s.init_logit_bias;
  if (s.custom_text) cfg["custom_text"] = true;
  cfg["vision_cfg"] = vision_cfg(s);
  cfg["text_cfg"] = text_cfg(s);
  if (s.coca) cfg["multimodal_cfg"] = multimodal_cfg(s);
  return cfg;
}

bool has_timm_trunk(const model::ModelSpec& s) {
  return s.image_tower == model::ImageTowerKind::timm_vit ||
         s.image_tower == model::ImageTowerKind::naflex_vit;
}

// The sizes of a timm trunk, as timm's VisionTransformer takes them: open_clip ignores them (it
// builds the trunk from timm_model_name); they say what the weights are, and let a test register
// a trunk timm does not ship (tiny-siglip). A NaFlexVit adds its tower and position table.
json timm_trunk(const model::ModelSpec& s) {
  json t = {{"img_size", s.image_size},
            {"patch_size", s.patch_size},
            {"embed_dim", s.vision_width},
            {"depth", s.vision_layers},
            {"num_heads", s.vision_heads()},
            {"mlp_ratio", s.vision_mlp_ratio},
            {"act", model::name_of(s.vision_act)},
            {"norm_eps", s.vision_norm_eps},
            {"global_pool", model::name_of(s.vision_pool)}};
  if (s.image_tower == model::ImageTowerKind::naflex_vit) {
    t["tower"] = model::name_of(s.image_tower);
    t["pos_embed_grid"] = s.pos_embed_grid;
    t["pos_embed_interp"] = model::name_of(s.pos_embed_interp);
  }
  return t;
}

// At most `limit` items of `names`, then a count of the rest.
std::string some(const std::vector<std::string>& names, std::size_t limit = 20) {
  std::string out;
  for (std::size_t i = 0; i < names.size() && i < limit; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > limit) out += ", ... (" + std::to_string(names.size() - limit) + " more)";
  return out;
}

}  // namespace

std::string strip_module(const std::string& key) {
  return key.rfind("module.", 0) == 0 ? key.substr(7) : key;
}

std::string shape_text(at::IntArrayRef s) {
  std::string t = "[";
  for (std::size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

std::string openclip_model_cfg_json(const model::ModelSpec& spec) {
  return model_cfg(spec).dump(2);
}

std::string openclip_config_json(const model::ModelSpec& s) {
  json pre;
  pre["size"] = s.image_size;
  pre["mode"] = "RGB";
  pre["mean"] = s.mean;
  pre["std"] = s.std;
  pre["interpolation"] = model::name_of(s.interpolation);
  pre["resize_mode"] = model::name_of(s.resize_mode);
  if (s.naflex_inputs()) {
    // NaFlex: timm's create_transform(naflex=True, patch_size, max_seq_len) arguments, the
    // aspect-preserving resize under a patch budget (open_clip 3.3 ignores these keys).
    pre["naflex"] = true;
    pre["patch_size"] = s.patch_size;
    pre["max_seq_len"] = s.max_seq_len;
  }
  json root;
  root["model_cfg"] = model_cfg(s);
  root["preprocess_cfg"] = pre;
  // Ignored by open_clip; tells clipper (and a reader) where the files came from.
  root["clipper"] = {{"model", s.name}, {"tokenizer", s.tokenizer}, {"version", core::version()}};
  if (has_timm_trunk(s)) root["clipper"]["timm_trunk"] = timm_trunk(s);
  return root.dump(2) + "\n";
}

TensorList model_state_dict(const model::ClipImpl& model) {
  TensorList out;
  for (const auto& [name, t] : model.state_dict())
    if (!model::is_siglip2_tensor(name))  // loss.siglip2's heads: training-only
      out.emplace_back(name, t.detach().to(at::kCPU));
  return out;
}

TensorList merged_state_dict(const model::ClipImpl& model) {
  TensorList tensors = model_state_dict(model);
  const auto n = model::merge_lora_state(tensors, model.spec().name);
  if (n > 0) CLIPPER_INFO("merged " << n << " LoRA adapters into their weights for the export");
  return tensors;
}

void export_openclip(const model::Clip& model, const model::ModelSpec& spec,
                     const std::string& out_dir) {
  fs::create_directories(out_dir);
  const std::string weights = (fs::path(out_dir) / "open_clip_model.safetensors").string();
  save_safetensors(
      weights, merged_state_dict(*model),
      {{"format", "pt"}, {"producer", "clipper " + core::version()}, {"model", spec.name}});
  core::write_file_atomic((fs::path(out_dir) / "open_clip_config.json").string(),
                          openclip_config_json(spec));
  CLIPPER_INFO("exported " << spec.name << " in OpenCLIP format to " << out_dir);
}

TensorList read_state_dict(const std::string& path) {
  std::error_code ec;
  const bool file = fs::is_regular_file(path, ec);
  // A dist.zero 3 checkpoint of a model whose every tensor is trainable has no model.safetensors.
  const bool sharded_only = !file && fs::path(path).filename() == "model.safetensors" &&
                            detail::is_sharded_checkpoint(fs::path(path).parent_path().string());
  if (!file && !sharded_only) throw InputError("weights file '" + path + "' does not exist");
  TensorList raw;
  if (sharded_only) {
  } else if (fs::path(path).extension() == ".safetensors") {
    raw = load_safetensors(path);
  } else {
    raw = detail::read_torch_save_state_dict(path);
  }
  TensorList out;
  out.reserve(raw.size());
  for (auto& [name, t] : raw) out.emplace_back(strip_module(name), std::move(t));
  detail::add_sharded_parameters(out, path);  // a dist.zero 3 checkpoint's parameters
  return out;
}

namespace {

bool has_lora(const TensorList& tensors) {
  for (const auto& item : tensors)
    if (model::is_lora_tensor(item.first)) return true;
  return false;
}

}  // namespace

LoadReport load_state_dict(model::ClipImpl& model, const TensorList& tensors_in,
                           const std::string& origin) {
  std::map<std::string, at::Tensor> target;
  std::vector<std::string> order;
  bool model_has_lora = false;
  for (const auto& [name, t] : model.state_dict()) {
    target.emplace(name, t);
    order.push_back(name);
    model_has_lora = model_has_lora || model::is_lora_tensor(name);
  }
  // Weights with LoRA adapters into a model without: the adapters merged into their weights.
  TensorList merged;
  if (!model_has_lora && has_lora(tensors_in)) {
    merged = tensors_in;
    const auto n = model::merge_lora_state(merged, origin);
    CLIPPER_INFO("weights '" << origin << "': " << n
                             << " LoRA adapters merged into their weights (W + scale * B A)");
  }
  const TensorList& tensors = merged.empty() ? tensors_in : merged;
  std::map<std::string, at::Tensor> given;
  std::set<std::string> present;
  std::vector<std::string> unexpected, mismatched;
  for (const auto& [name, t] : tensors) {
    present.insert(name);
    auto it = target.find(name);
    if (it == target.end() && model::is_siglip2_tensor(name))
      continue;  // a checkpoint's SigLIP 2 heads
    if (it == target.end()) {
      unexpected.push_back(name);
      continue;
    }
    at::Tensor src = t;
    if ((name == "logit_scale" || name == "logit_bias") && src.numel() == 1)
      src = src.reshape(it->second.sizes());
    if (src.sizes() != it->second.sizes()) {
      mismatched.push_back(name + " (file " + shape_text(src.sizes()) + ", model " +
                           shape_text(it->second.sizes()) + ")");
      continue;
    }
    given[name] = src;
  }
  std::vector<std::string> missing;
  for (const auto& name : order)
    if (!present.count(name) && name != "logit_bias")  // OpenCLIP starts a missing bias at 0
      missing.push_back(name);
  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    std::string msg = "weights '" + origin + "' do not fit model '" + model.spec().name + "':";
    if (!missing.empty())
      msg += "\n  missing keys (" + std::to_string(missing.size()) + "): " + some(missing);
    if (!unexpected.empty())
      msg += "\n  unexpected keys (" + std::to_string(unexpected.size()) + "): " + some(unexpected);
    if (!mismatched.empty())
      msg +=
          "\n  shape mismatches (" + std::to_string(mismatched.size()) + "): " + some(mismatched);
    throw InputError(msg);
  }
  at::NoGradGuard no_grad;
  LoadReport report;
  for (const auto& [name, dst] : target) {
    auto it = given.find(name);
    if (it == given.end()) {
      CLIPPER_WARN("weights '" << origin
                               << "' have no logit_bias; starting it at 0 (as OpenCLIP does)");
      dst.zero_();
      report.left_at_init.push_back(name);
      continue;
    }
    dst.copy_(it->second);
    ++report.tensors;
    report.values += dst.numel();
  }
  return report;
}

at::Tensor resize_image_pos_embed(const at::Tensor& pos, std::int64_t grid,
                                  const std::string& origin) {
  const auto cells = pos.size(0) - 1;  // one class token (as open_clip assumes)
  const auto old_grid = static_cast<std::int64_t>(std::llround(std::sqrt(double(cells))));
  if (pos.dim() != 2 || cells < 1 || old_grid * old_grid != cells)
    throw InputError("weights '" + origin + "': visual.positional_embedding has shape " +
                     shape_text(pos.sizes()) +
                     ", expected [1 + g*g, width] (a class token and a square grid)");
  const auto width = pos.size(1);
  const auto img = pos.narrow(0, 1, cells)
                       .to(at::kFloat)
                       .reshape({1, old_grid, old_grid, width})
                       .permute({0, 3, 1, 2});
  const std::vector<std::int64_t> size{grid, grid};
  const auto resized = at::_upsample_bicubic2d_aa(img, at::IntArrayRef(size),
                                                  /*align_corners=*/false, std::optional<double>(),
                                                  std::optional<double>());
  const auto cells_out = resized.permute({0, 2, 3, 1}).reshape({grid * grid, width});
  return at::cat({pos.narrow(0, 0, 1), cells_out.to(pos.scalar_type())}, 0);
}

at::Tensor resize_text_pos_embed(const at::Tensor& pos, std::int64_t length) {
  const auto x = pos.to(at::kFloat).unsqueeze(0).permute({0, 2, 1});  // [1, W, L]
  const std::vector<std::int64_t> size{length};
  const auto y = at::upsample_linear1d(x, at::IntArrayRef(size), /*align_corners=*/false,
                                       std::optional<double>());
  return y.permute({0, 2, 1})[0].to(pos.scalar_type()).contiguous();
}

void resize_pos_embeds(const model::ClipImpl& model, TensorList& tensors,
                       const std::string& origin) {
  for (auto& [name, t] : tensors) {
    if (name == "visual.positional_embedding" && model.visual_vit) {
      const auto& want = model.visual_vit->positional_embedding;
      if (t.sizes() == want.sizes() || t.dim() != 2 || t.size(1) != want.size(1)) continue;
      const auto grid = model.visual_vit->grid;
      CLIPPER_INFO("weights '" << origin << "': resizing the image position embedding from "
                               << t.size(0) - 1 << " cells to a " << grid << "x" << grid
                               << " grid");
      t = resize_image_pos_embed(t, grid, origin);
    } else if (name == "positional_embedding" || name == "text.positional_embedding") {
      const auto& want = model.positional_embedding;
      if (t.sizes() == want.sizes() || t.dim() != 2 || t.size(1) != want.size(1)) continue;
      CLIPPER_INFO("weights '" << origin << "': resizing the text position embedding from "
                               << t.size(0) << " to " << want.size(0) << " positions");
      t = resize_text_pos_embed(t, want.size(0));
    }
  }
}

LoadReport load_openclip_weights(model::Clip& model, const std::string& path) {
  auto tensors = read_state_dict(path);
  if (is_hf_siglip_state_dict(tensors))  // a transformers SiglipModel folder's model.safetensors
    tensors = openclip_from_hf_siglip(tensors, model->spec(), path);
  resize_pos_embeds(*model, tensors, path);
  return load_state_dict(*model, tensors, path);
}

void overlay_checkpoint_ema(TensorList& tensors, const std::string& checkpoint_dir) {
  const fs::path file = fs::path(checkpoint_dir) / "ema.safetensors";
  std::error_code ec;
  const bool whole = fs::is_regular_file(file, ec);
  // dist.zero 3: ema.json lists the averages each rank saved as shards (and there may be no
  // ema.safetensors at all: a model without buffers).
  TensorList averages = detail::sharded_averages(checkpoint_dir, tensors);
  if (!whole && averages.empty())
    throw InputError("'" + checkpoint_dir +
                     "' holds no weight average (ema.safetensors): it is not a checkpoint of a "
                     "run with train.ema_decay > 0");
  if (whole)
    for (auto& item : load_safetensors(file.string())) averages.push_back(std::move(item));
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < tensors.size(); ++i) index[tensors[i].first] = i;
  for (auto& [name, t] : averages) {
    const auto it = index.find(name);
    if (it == index.end())
      throw InputError(file.string() + ": '" + name + "' is not a tensor of the model's weights");
    at::Tensor& target = tensors[it->second].second;
    if (t.sizes() != target.sizes())
      throw InputError(file.string() + ": '" + name + "' has shape " + shape_text(t.sizes()) +
                       ", the weights " + shape_text(target.sizes()));
    target = t;
  }
}

void load_checkpoint_ema(model::Clip& model, const std::string& weights) {
  const fs::path p(weights);
  if (p.filename() != "model.safetensors")
    throw InputError("eval.use_ema: '" + weights +
                     "' is not a checkpoint's model.safetensors; give --weights a checkpoint "
                     "folder of a run with train.ema_decay > 0, or an export made with "
                     "clipper export --ema (and eval.use_ema false)");
  // The checkpoint's own tensors (LoRA adapters included: the average holds theirs).
  TensorList tensors = read_state_dict(weights);
  overlay_checkpoint_ema(tensors, p.parent_path().string());
  load_state_dict(*model, tensors, (p.parent_path() / "ema.safetensors").string());
  CLIPPER_INFO("weights: the average in " << (p.parent_path() / "ema.safetensors").string());
}

model::ModelSpec run_model_spec(const config::Config& run) {
  auto spec = model::load_model_spec(run.model.name);
  model::apply_overrides(spec, {run.model.force_image_size, run.model.force_quick_gelu,
                                run.model.force_patch_dropout});
  if (run.loss.kind == config::LossKind::siglip) model::use_siglip_init(spec);
  return spec;
}

model::Clip load_checkpoint_model(const std::string& checkpoint, const std::string& model_name,
                                  model::ModelSpec* spec_out, bool ema) {
  std::error_code ec;
  std::string weights = checkpoint;
  std::string name = model_name;
  std::optional<model::ModelSpec> from_run;  // the folder's config.yaml, when it names the model
  if (fs::is_directory(checkpoint, ec)) {
    weights = (fs::path(checkpoint) / "model.safetensors").string();
    if (!fs::is_regular_file(weights, ec) && !detail::is_sharded_checkpoint(checkpoint))
      throw InputError("checkpoint folder '" + checkpoint + "' has no model.safetensors");
    if (name.empty()) {
      const std::string cfg = (fs::path(checkpoint) / "config.yaml").string();
      if (!fs::is_regular_file(cfg, ec))
        throw InputError("checkpoint folder '" + checkpoint +
                         "' has no config.yaml to name the model; give --model NAME");
      const auto run = config::load({cfg}, {}, /*check_required=*/false);
      if (run.model.name.empty())
        throw InputError(cfg + ": model.name is not set; give --model NAME");
      from_run = run_model_spec(run);
    }
  } else if (!fs::is_regular_file(checkpoint, ec)) {
    throw InputError("checkpoint '" + checkpoint + "' does not exist");
  } else if (ema) {
    throw InputError("--ema: '" + checkpoint +
                     "' is a weights file; give the checkpoint folder (its ema.safetensors holds "
                     "the weight average)");
  } else if (name.empty()) {
    throw InputError("'" + checkpoint +
                     "' is a weights file: give the architecture with --model NAME");
  }
  auto spec = from_run ? *from_run : model::load_model_spec(name);
  auto tensors = read_state_dict(weights);
  if (ema) overlay_checkpoint_ema(tensors, checkpoint);
  // A weights file has a logit_bias only from a SigLIP run (or a SigLIP architecture).
  for (const auto& [key, t] : tensors)
    if (key == "logit_bias") model::use_siglip_init(spec);
  model::Clip m(spec);
  load_state_dict(*m, tensors, weights);
  *spec_out = spec;
  return m;
}

void export_checkpoint_openclip(const std::string& checkpoint, const std::string& model_name,
                                const std::string& out_dir, bool ema) {
  model::ModelSpec spec;
  const auto m = load_checkpoint_model(checkpoint, model_name, &spec, ema);
  export_openclip(m, spec, out_dir);
}

namespace {

// open_clip's spelling of what clipper's model files spell their own way (a timm trunk's sizes
// come from the clipper block, open_clip reading them from timm).
void to_clipper_keys(json& doc, const json& clipper_block) {
  json& v = doc["vision_cfg"];
  if (clipper_block.contains("timm_trunk")) {
    const json& t = clipper_block["timm_trunk"];
    v["tower"] = t.value("tower", std::string("timm_vit"));
    if (t.contains("pos_embed_grid")) v["pos_embed_grid"] = t["pos_embed_grid"];
    if (t.contains("pos_embed_interp")) v["pos_embed_interp"] = t["pos_embed_interp"];
    v["patch_size"] = t.at("patch_size");
    v["width"] = t.at("embed_dim");
    v["layers"] = t.at("depth");
    v["head_width"] = t.at("embed_dim").get<std::int64_t>() / t.at("num_heads").get<std::int64_t>();
    v["mlp_ratio"] = t.at("mlp_ratio");
    v["act"] = t.at("act");
    v["norm_eps"] = t.at("norm_eps");
  }
  v.erase("timm_model_pretrained");
  v.erase("timm_proj");
  json& t = doc["text_cfg"];
  if (t.contains("norm_kwargs")) t["norm_eps"] = t["norm_kwargs"].value("eps", 1e-5);
  if (t.contains("act_kwargs") && t["act_kwargs"].value("approximate", "") == "tanh")
    t["act"] = "gelu_tanh";
  if (t.contains("tokenizer_kwargs"))
    t["tokenizer_clean"] = t["tokenizer_kwargs"].value("clean", "whitespace");
  for (const char* k : {"norm_kwargs", "act_kwargs", "tokenizer_kwargs", "hf_tokenizer_name"})
    t.erase(k);
}

// An export's open_clip_config.json as a clipper model spec (JSON is YAML, so the model file
// parser reads it, with the same checks).
model::ModelSpec spec_from_export_config(const json& root, const std::string& origin) {
  json doc = root.at("model_cfg");
  const json& c = root.at("clipper");
  to_clipper_keys(doc, c);
  doc["tokenizer"] = c.value("tokenizer", std::string("clip"));
  if (root.contains("preprocess_cfg")) {
    const json& p = root["preprocess_cfg"];
    json pre;
    for (const char* k : {"mean", "std", "interpolation", "resize_mode", "max_seq_len"})
      if (p.contains(k)) pre[k] = p[k];
    doc["preprocess_cfg"] = pre;
  }
  auto spec = model::parse_model_spec(doc.dump(), c.value("model", std::string("export")), origin);
  spec.path = origin;
  return spec;
}

void flatten(const json& j, const std::string& prefix, std::map<std::string, std::string>* out) {
  if (j.is_object()) {
    for (const auto& [k, v] : j.items()) flatten(v, prefix.empty() ? k : prefix + "." + k, out);
    return;
  }
  (*out)[prefix] = j.dump();
}

}  // namespace

std::optional<model::ModelSpec> described_model(const std::string& weights) {
  const fs::path dir = fs::path(weights).parent_path();
  std::error_code ec;
  const fs::path export_cfg = dir / "open_clip_config.json";
  if (fs::path(weights).filename() == "open_clip_model.safetensors" &&
      fs::is_regular_file(export_cfg, ec)) {
    json root;
    try {
      root = json::parse(core::read_file(export_cfg.string()));
    } catch (const json::exception& e) {
      throw InputError(export_cfg.string() + ": not valid JSON (" + e.what() + ")");
    }
    // Written by open_clip or another tool: its model_cfg may hold what clipper does not build.
    if (!root.is_object() || !root.contains("clipper") || !root.contains("model_cfg"))
      return std::nullopt;
    return spec_from_export_config(root, export_cfg.string());
  }
  const fs::path run_cfg = dir / "config.yaml";
  if (fs::path(weights).filename() == "model.safetensors" && fs::is_regular_file(run_cfg, ec)) {
    const auto run = config::load({run_cfg.string()}, {}, /*check_required=*/false);
    if (run.model.name.empty()) return std::nullopt;
    return run_model_spec(run);
  }
  return std::nullopt;
}

std::string architecture_difference(const model::ModelSpec& a, const model::ModelSpec& b) {
  model::ModelSpec a2 = a;  // the init values are not the architecture
  a2.init_logit_scale = b.init_logit_scale;
  a2.init_logit_bias = b.init_logit_bias;
  // A timm trunk's sizes are not in model_cfg (open_clip reads them from timm): compared too.
  auto described = [](const model::ModelSpec& s) {
    json j = model_cfg(s);
    if (has_timm_trunk(s)) j["timm_trunk"] = timm_trunk(s);
    return j;
  };
  std::map<std::string, std::string> fa, fb;
  flatten(described(a2), "", &fa);
  flatten(described(b), "", &fb);
  std::vector<std::string> diffs;
  for (const auto& [k, v] : fa) {
    const auto it = fb.find(k);
    if (it == fb.end() || it->second != v)
      diffs.push_back(k + " " + v + " vs " + (it == fb.end() ? "(none)" : it->second));
  }
  for (const auto& [k, v] : fb)
    if (!fa.count(k)) diffs.push_back(k + " (none) vs " + v);
  return some(diffs, 5);
}

std::string resolve_weights(const std::string& path) {
  if (fs::is_directory(path)) {
    // A dist.zero 3 checkpoint's model.safetensors too: read_state_dict assembles the parameters
    // its ranks saved as shards.
    for (const char* name : {"open_clip_model.safetensors", "model.safetensors"})
      if (fs::exists(fs::path(path) / name)) return (fs::path(path) / name).string();
    if (detail::is_sharded_checkpoint(path)) return (fs::path(path) / "model.safetensors").string();
    throw core::InputError("'" + path +
                           "' holds neither open_clip_model.safetensors (an export) nor "
                           "model.safetensors (a checkpoint)");
  }
  if (!fs::exists(path)) throw core::InputError("weights '" + path + "' do not exist");
  return path;
}

}  // namespace clipper::io
