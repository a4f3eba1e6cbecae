#include "clipper/io/hf_siglip.hpp"

#include <c10/util/Exception.h>

#include <cmath>
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
using core::InputError;

// How one group of tensors maps between OpenCLIP's names (oc) and transformers' (hf).
enum class Map {
  same,           // one tensor each side, as it is
  rows,           // the row blocks of one side are the other side's (qkv / q, k, v)
  patch_linear,   // Siglip2: conv [W, C, P, P] / Linear [W, P*P*C], patches flattened (p, q, c)
  scalar,         // logit_scale, logit_bias: 0-d / [1]
  unbatch,        // trunk.pos_embed [1, N, W] / position_embedding [N, W]
  grid_table,     // NaFlex: trunk.embeds.pos_embed [1, G, G, W] / position_embedding [G*G, W]
  head_matrix,    // text_projection [width, embed] / head: its transpose and a zero bias
  head_identity,  // no text projection / head: the identity and a zero bias
};

struct Link {
  Map map;
  std::vector<std::string> oc, hf;
  std::vector<std::int64_t> oc_rows, hf_rows;  // Map::rows: each tensor's share of the rows
};

// The name map of a spec, built block by block.
class Links {
 public:
  void same(const std::string& hf, const std::string& oc) {
    all.push_back({Map::same, {oc}, {hf}, {}, {}});
  }
  void linear(const std::string& hf, const std::string& oc) {
    same(hf + ".weight", oc + ".weight");
    same(hf + ".bias", oc + ".bias");
  }
  void rows(std::vector<std::string> hf, std::vector<std::int64_t> hf_rows,
            std::vector<std::string> oc, std::vector<std::int64_t> oc_rows) {
    all.push_back(
        {Map::rows, std::move(oc), std::move(hf), std::move(oc_rows), std::move(hf_rows)});
  }
  void add(Map m, std::vector<std::string> hf, std::vector<std::string> oc) {
    all.push_back({m, std::move(oc), std::move(hf), {}, {}});
  }
  std::vector<Link> all;
};

// An encoder block's attention, MLP and norms; `qkv(kind)`: OpenCLIP's fused in-projection.
template <typename Qkv>
void link_block(Links& l, const std::string& hf, const std::string& oc, const Qkv& qkv,
                const char* attn_proj, const char* norm1, const char* norm2, const char* fc1,
                const char* fc2) {
  l.linear(hf + ".layer_norm1", oc + "." + norm1);
  for (const std::string kind : {"weight", "bias"})
    l.rows({hf + ".self_attn.q_proj." + kind, hf + ".self_attn.k_proj." + kind,
            hf + ".self_attn.v_proj." + kind},
           {1, 1, 1}, {qkv(kind)}, {1});
  l.linear(hf + ".self_attn.out_proj", oc + "." + attn_proj);
  l.linear(hf + ".layer_norm2", oc + "." + norm2);
  l.linear(hf + ".mlp.fc1", oc + "." + fc1);
  l.linear(hf + ".mlp.fc2", oc + "." + fc2);
}

void link_vision(Links& l, const model::ModelSpec& s, HfClass cls) {
  const std::string v = "vision_model.", t = "visual.trunk.";
  const bool naflex = s.image_tower == model::ImageTowerKind::naflex_vit;
  if (naflex) {  // timm's NaFlexVit: already a Linear over (row, column, channel) patches
    l.linear(v + "embeddings.patch_embedding", t + "embeds.proj");
    l.add(Map::grid_table, {v + "embeddings.position_embedding.weight"}, {t + "embeds.pos_embed"});
  } else if (cls == HfClass::siglip2) {
    l.add(Map::patch_linear, {v + "embeddings.patch_embedding.weight"},
          {t + "patch_embed.proj.weight"});
    l.same(v + "embeddings.patch_embedding.bias", t + "patch_embed.proj.bias");
  } else {
    l.linear(v + "embeddings.patch_embedding", t + "patch_embed.proj");
  }
  if (!naflex) l.add(Map::unbatch, {v + "embeddings.position_embedding.weight"}, {t + "pos_embed"});
  for (std::int64_t i = 0; i < s.vision_layers; ++i) {
    const std::string oc = t + "blocks." + std::to_string(i);
    link_block(
        l, v + "encoder.layers." + std::to_string(i), oc,
        [&](const std::string& kind) { return oc + ".attn.qkv." + kind; }, "attn.proj", "norm1",
        "norm2", "mlp.fc1", "mlp.fc2");
  }
  l.linear(v + "post_layernorm", t + "norm");
  const std::string h = v + "head.", p = t + "attn_pool.";
  l.same(h + "probe", p + "latent");
  for (const std::string kind : {"weight", "bias"})
    l.rows({h + "attention.in_proj_" + kind}, {3}, {p + "q." + kind, p + "kv." + kind}, {1, 2});
  l.linear(h + "attention.out_proj", p + "proj");
  l.linear(h + "layernorm", p + "norm");
  l.linear(h + "mlp.fc1", p + "mlp.fc1");
  l.linear(h + "mlp.fc2", p + "mlp.fc2");
}

void link_text(Links& l, const model::ModelSpec& s) {
  const std::string v = "text_model.", t = s.custom_text ? "text." : "";
  l.same(v + "embeddings.token_embedding.weight", t + "token_embedding.weight");
  l.same(v + "embeddings.position_embedding.weight", t + "positional_embedding");
  for (std::int64_t i = 0; i < s.text_layers; ++i) {
    const std::string oc = t + "transformer.resblocks." + std::to_string(i);
    link_block(
        l, v + "encoder.layers." + std::to_string(i), oc,
        [&](const std::string& kind) { return oc + ".attn.in_proj_" + kind; }, "attn.out_proj",
        "ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj");
  }
  l.linear(v + "final_layer_norm", t + "ln_final");
  const std::vector<std::string> head{v + "head.weight", v + "head.bias"};
  if (s.text_proj_none)
    l.add(Map::head_identity, head, {});
  else if (s.text_proj_bias)
    l.linear(v + "head", t + "text_projection");
  else
    l.add(Map::head_matrix, head, {t + "text_projection"});
}

std::vector<Link> name_map(const model::ModelSpec& s, HfClass cls) {
  Links l;
  link_vision(l, s, cls);
  link_text(l, s);
  l.add(Map::scalar, {"logit_scale"}, {"logit_scale"});
  l.add(Map::scalar, {"logit_bias"}, {"logit_bias"});
  return l.all;
}

std::string joined(const std::vector<std::string>& names, std::size_t limit = 12) {
  std::string out;
  for (std::size_t i = 0; i < names.size() && i < limit; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > limit) out += ", ... (" + std::to_string(names.size()) + " in all)";
  return out;
}

// Splits the rows of `all` into parts proportional to `shares`.
std::vector<at::Tensor> split_rows(const at::Tensor& all, const std::vector<std::int64_t>& shares) {
  std::int64_t total = 0;
  for (auto s : shares) total += s;
  if (all.size(0) % total != 0)
    throw InputError(std::to_string(all.size(0)) + " rows do not split into " +
                     std::to_string(total) + " equal parts");
  const auto unit = all.size(0) / total;
  std::vector<at::Tensor> out;
  std::int64_t at = 0;
  for (auto s : shares) {
    out.push_back(all.narrow(0, at, s * unit).contiguous());
    at += s * unit;
  }
  return out;
}

// OpenCLIP's tensors of a link as transformers'. `like`: any tensor of the model (its dtype).
std::vector<at::Tensor> to_hf(const Link& k, const std::vector<at::Tensor>& in,
                              const model::ModelSpec& s, const at::Tensor& like) {
  switch (k.map) {
    case Map::rows:
      return split_rows(at::cat(in, 0), k.hf_rows);
    case Map::patch_linear:  // [W, C, P, P] -> [W, P, P, C] -> [W, P*P*C]
      return {in[0].permute({0, 2, 3, 1}).reshape({in[0].size(0), -1}).contiguous()};
    case Map::scalar:
      return {in[0].reshape({1})};
    case Map::unbatch:
      return {in[0].squeeze(0).contiguous()};
    case Map::grid_table:
      return {in[0].reshape({-1, in[0].size(-1)}).contiguous()};
    case Map::head_matrix:
      return {in[0].t().contiguous(), at::zeros({in[0].size(1)}, in[0].options())};
    case Map::head_identity:
      return {at::eye(s.text_width, like.options()), at::zeros({s.text_width}, like.options())};
    default:
      return in;
  }
}

// Whether `t` is zero (a head bias clipper's tower does not have).
void expect_zero(const at::Tensor& t, const std::string& name, const std::string& why) {
  if (t.count_nonzero().item<std::int64_t>() != 0) throw InputError(name + " is not zero: " + why);
}

// transformers' tensors of a link as OpenCLIP's.
std::vector<at::Tensor> from_hf(const Link& k, const std::vector<at::Tensor>& in,
                                const model::ModelSpec& s) {
  const std::string no_proj = "the model's text tower (text_cfg.proj_type none) has no projection";
  switch (k.map) {
    case Map::rows:
      return split_rows(at::cat(in, 0), k.oc_rows);
    case Map::patch_linear: {  // [W, P*P*C] -> [W, P, P, C] -> [W, C, P, P]
      const auto p = s.patch_size;
      if (in[0].dim() != 2 || in[0].size(1) != 3 * p * p)
        throw InputError(k.hf[0] + " has shape " + shape_text(in[0].sizes()) + ", expected [" +
                         std::to_string(s.vision_width) + ", " + std::to_string(3 * p * p) +
                         "] (patch_size " + std::to_string(p) + ", 3 channels)");
      return {in[0].reshape({in[0].size(0), p, p, 3}).permute({0, 3, 1, 2}).contiguous()};
    }
    case Map::scalar:
      return {in[0].reshape({})};
    case Map::unbatch:
      return {in[0].unsqueeze(0)};
    case Map::grid_table: {
      const auto g = s.pos_embed_grid;
      if (in[0].dim() != 2 || in[0].size(0) != g * g)
        throw InputError(k.hf[0] + " has shape " + shape_text(in[0].sizes()) + ", expected [" +
                         std::to_string(g * g) + ", " + std::to_string(s.vision_width) +
                         "] (vision_cfg.pos_embed_grid " + std::to_string(g) + ")");
      return {in[0].reshape({1, g, g, in[0].size(1)})};
    }
    case Map::head_matrix:
      expect_zero(in[1], k.hf[1],
                  "the model's text projection (text_cfg.proj_bias false) has none");
      return {in[0].t().contiguous()};
    case Map::head_identity:
      if (in[0].dim() != 2 || in[0].size(0) != in[0].size(1) ||
          !at::equal(in[0], at::eye(in[0].size(0), in[0].options())))
        throw InputError(k.hf[0] + " is not the identity: " + no_proj);
      expect_zero(in[1], k.hf[1], no_proj);
      return {};
    default:
      return in;
  }
}

// Hands out the tensors of a state dict by name, recording which were used.
class Source {
 public:
  explicit Source(const TensorList& from) {
    for (const auto& [k, t] : from) src_.emplace(k, t);
  }
  bool has(const std::string& name) const { return src_.count(name) > 0; }
  at::Tensor take(const std::string& name) {
    used_.insert(name);
    return src_.at(name);
  }
  std::vector<std::string> unused(const std::string& ignored_suffix = "\x01") const {
    std::vector<std::string> left;
    for (const auto& [k, t] : src_) {
      const bool ignored =
          k.size() >= ignored_suffix.size() &&
          k.compare(k.size() - ignored_suffix.size(), std::string::npos, ignored_suffix) == 0;
      if (!used_.count(k) && !ignored) left.push_back(k);
    }
    return left;
  }
  const at::Tensor& any() const { return src_.begin()->second; }

 private:
  std::map<std::string, at::Tensor> src_;
  std::set<std::string> used_;
};

std::string hf_act(model::Activation a) {
  switch (a) {
    case model::Activation::gelu_tanh:
      return "gelu_pytorch_tanh";
    case model::Activation::quick_gelu:
      return "quick_gelu";
    default:
      return "gelu";
  }
}

json tower_common(std::int64_t width, std::int64_t heads, std::int64_t layers, double mlp_ratio,
                  model::Activation act, double eps) {
  json c;
  c["hidden_size"] = width;
  c["intermediate_size"] = model::mlp_width(width, mlp_ratio);
  c["num_attention_heads"] = heads;
  c["num_hidden_layers"] = layers;
  c["hidden_act"] = hf_act(act);
  c["layer_norm_eps"] = eps;
  return c;
}

// The text config's special token ids: the tokenizer's, where clipper knows them (an id outside
// the vocabulary is written as null: transformers warns about those). SigLIP's T5 SentencePiece
// (32,000 pieces): pad = eos = 1; SigLIP 2's Gemma (256,000): pad 0, eos 1, bos 2; the CLIP BPE:
// clipper pads with 0. They tag the config only: SiglipTextModel pools the last position.
void put_special_ids(json& text, const model::ModelSpec& s, const std::optional<HfTextIds>& ids) {
  const HfTextIds t = ids ? *ids : guessed_text_ids(s);
  const auto id = [&](const std::optional<std::int64_t>& i) {
    return i && *i >= 0 && *i < s.vocab_size ? json(*i) : json(nullptr);
  };
  text["pad_token_id"] = id(t.pad);
  text["bos_token_id"] = id(t.bos);
  text["eos_token_id"] = id(t.eos);
}

json text_config(const model::ModelSpec& s, HfClass cls, const std::optional<HfTextIds>& ids) {
  json c = tower_common(s.text_width, s.text_heads, s.text_layers, s.text_mlp_ratio,
                        s.text_activation(), s.text_norm_eps);
  c["vocab_size"] = s.vocab_size;
  c["max_position_embeddings"] = s.context_length;
  c["projection_size"] = s.embed_dim;
  put_special_ids(c, s, ids);
  c["model_type"] = cls == HfClass::siglip2 ? "siglip2_text_model" : "siglip_text_model";
  return c;
}

json vision_config(const model::ModelSpec& s, HfClass cls) {
  json c = tower_common(s.vision_width, s.vision_heads(), s.vision_layers, s.vision_mlp_ratio,
                        s.image_activation(), s.vision_norm_eps);
  c["num_channels"] = 3;
  c["patch_size"] = s.patch_size;
  const auto grid = s.image_tower == model::ImageTowerKind::naflex_vit
                        ? s.pos_embed_grid  // the table, resized per picture as clipper does
                        : s.image_size / s.patch_size;
  if (cls == HfClass::siglip2)
    c["num_patches"] = grid * grid;
  else
    c["image_size"] = s.image_size;
  c["vision_use_head"] = true;
  c["model_type"] = cls == HfClass::siglip2 ? "siglip2_vision_model" : "siglip_vision_model";
  return c;
}

json config_object(const model::ModelSpec& s, HfClass cls,
                   const std::optional<HfTextIds>& ids = std::nullopt) {
  json root;
  root["architectures"] = {name_of(cls)};
  root["model_type"] = cls == HfClass::siglip2 ? "siglip2" : "siglip";
  root["text_config"] = text_config(s, cls, ids);
  root["vision_config"] = vision_config(s, cls);
  root["dtype"] = "float32";
  root["clipper"] = {{"model", s.name}, {"tokenizer", s.tokenizer}, {"version", core::version()}};
  return root;
}

// transformers' defaults for the keys a config.json may leave out.
json hf_default(const std::string& key, const json& tower) {
  static const json d = {{"hidden_size", 768},
                         {"intermediate_size", 3072},
                         {"num_hidden_layers", 12},
                         {"num_attention_heads", 12},
                         {"hidden_act", "gelu_pytorch_tanh"},
                         {"layer_norm_eps", 1e-6},
                         {"vocab_size", 32000},
                         {"max_position_embeddings", 64},
                         {"num_channels", 3},
                         {"image_size", 224},
                         {"patch_size", 16},
                         {"num_patches", 256},
                         {"vision_use_head", true}};
  if (key == "projection_size") return tower.value("hidden_size", json(768));
  return d.contains(key) ? d[key] : json(nullptr);
}

bool same_value(const json& a, const json& b) {
  if (a.is_number() && b.is_number())
    return std::abs(a.get<double>() - b.get<double>()) <= 1e-9 * std::abs(b.get<double>());
  return a == b;
}

// The differences between a transformers config.json and what `spec` exports, "" when none.
std::string config_difference(const json& file, const model::ModelSpec& s, HfClass cls) {
  const json want = config_object(s, cls);
  std::vector<std::string> diffs;
  for (const char* tower : {"text_config", "vision_config"}) {
    const json have =
        file.contains(tower) && file[tower].is_object() ? file[tower] : json::object();
    for (const auto& [key, value] : want[tower].items()) {
      if (key == "model_type" || key.find("token_id") != std::string::npos) continue;
      const json got =
          have.contains(key) && !have[key].is_null() ? have[key] : hf_default(key, have);
      if (!same_value(got, value))
        diffs.push_back(std::string(tower) + "." + key + " " + got.dump() + " (the model's " +
                        value.dump() + ")");
    }
  }
  return joined(diffs);
}

void check_config_beside(const std::string& origin, const model::ModelSpec& s, HfClass cls) {
  const fs::path cfg = fs::path(origin).parent_path() / "config.json";
  std::error_code ec;
  if (!fs::is_regular_file(cfg, ec)) return;
  json file;
  try {
    file = json::parse(core::read_file(cfg.string()));
  } catch (const json::exception& e) {
    throw InputError(cfg.string() + ": not valid JSON (" + e.what() + ")");
  }
  const std::string type = file.is_object() ? file.value("model_type", std::string()) : "";
  if (type != "siglip" && type != "siglip2")
    throw InputError(cfg.string() + ": model_type '" + type + "', expected siglip or siglip2 " +
                     "(transformers' SiglipModel / Siglip2Model beside SigLIP weights)");
  const std::string diff = config_difference(file, s, cls);
  if (!diff.empty())
    throw InputError(cfg.string() + " describes another architecture than model '" + s.name +
                     "': " + diff);
}

bool write_preprocessor(const model::ModelSpec& s, HfClass cls, const fs::path& dir) {
  if (s.resize_mode != model::ResizeMode::squash && !s.naflex_inputs()) return false;
  json p;
  p["image_processor_type"] =
      cls == HfClass::siglip2 ? "Siglip2ImageProcessor" : "SiglipImageProcessor";
  p["do_resize"] = true;
  if (cls == HfClass::siglip2) {
    p["patch_size"] = s.patch_size;
    // NaFlex: its token budget (each picture at its aspect ratio, as clipper's preprocessing).
    p["max_num_patches"] = s.naflex_inputs()
                               ? s.max_seq_len
                               : (s.image_size / s.patch_size) * (s.image_size / s.patch_size);
  } else {
    p["size"] = {{"height", s.image_size}, {"width", s.image_size}};
  }
  p["resample"] = s.interpolation == model::Interpolation::bilinear ? 2 : 3;  // PIL's numbers
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

const char* name_of(HfClass c) {
  switch (c) {
    case HfClass::siglip:
      return "SiglipModel";
    case HfClass::siglip2:
      return "Siglip2Model";
    default:
      return "CLIPModel";
  }
}

std::optional<HfClass> parse_hf_class(const std::string& name) {
  for (auto c : {HfClass::clip, HfClass::siglip, HfClass::siglip2})
    if (name == name_of(c)) return c;
  return std::nullopt;
}

HfClass default_hf_class(const model::ModelSpec& spec) {
  if (spec.image_tower == model::ImageTowerKind::naflex_vit) return HfClass::siglip2;
  return spec.image_tower == model::ImageTowerKind::timm_vit ? HfClass::siglip : HfClass::clip;
}

std::string hf_siglip_unsupported(const model::ModelSpec& s, HfClass cls) {
  std::string why;
  const auto add = [&why](const std::string& line) { why += "\n  " + line; };
  const bool naflex = s.image_tower == model::ImageTowerKind::naflex_vit;
  if (naflex && cls != HfClass::siglip2)
    add("the image tower is NaFlex (vision_cfg.tower naflex_vit): transformers' NaFlex tower is "
        "Siglip2Model's (--hf-class Siglip2Model)");
  else if (naflex && s.pos_embed_interp != model::Interpolation::bilinear)
    add("vision_cfg.pos_embed_interp bicubic: Siglip2Model resizes the position table "
        "bilinearly");
  else if (s.image_tower != model::ImageTowerKind::timm_vit && !naflex)
    add(std::string("the image tower is OpenCLIP's ") + model::name_of(s.image_tower) + " (" +
        "vision_cfg.tower): transformers' SigLIP image tower is timm's trunk (tower timm_vit; " +
        "--hf-class CLIPModel exports OpenCLIP ViTs)");
  else if (s.vision_pool != model::VisionPool::map)
    add(std::string("vision_cfg.timm_pool '") + model::name_of(s.vision_pool) +
        "': the SigLIP image feature is its attention-pool head (map, vision_use_head)");
  if (!s.text_no_causal_mask)
    add("a causal text tower (text_cfg.no_causal_mask false): the SigLIP text tower is "
        "bidirectional");
  if (s.text_pool != model::TextPool::last)
    add(std::string("text_cfg.pool_type '") + model::name_of(s.text_pool) +
        "': the SigLIP text tower pools the last position");
  if (cls == HfClass::siglip2 && !naflex && s.image_size % s.patch_size != 0)
    add("image_size " + std::to_string(s.image_size) + " is not a multiple of patch_size " +
        std::to_string(s.patch_size) + ": clipper's trunk drops the last " +
        std::to_string(s.image_size % s.patch_size) + " pixel rows and columns, " +
        "Siglip2Model takes whole patches (Siglip2ImageProcessor resizes to them): use " +
        "--hf-class SiglipModel");
  if (cls == HfClass::clip) add("the class is CLIPModel (hf_export.hpp), not a SigLIP one");
  return why;
}

void check_hf_siglip_exportable(const model::ModelSpec& spec, HfClass cls) {
  const std::string why = hf_siglip_unsupported(spec, cls);
  if (!why.empty())
    throw InputError("model '" + spec.name + "' cannot be exported for transformers' " +
                     name_of(cls) + ":" + why + "\n(--format openclip exports any clipper model)");
}

HfTextIds guessed_text_ids(const model::ModelSpec& s) {
  HfTextIds t;
  if (s.tokenizer == "clip") {
    t.bos = 49406, t.eos = 49407, t.pad = 0;
  } else if (s.vocab_size == 32000) {
    t.eos = 1, t.pad = 1;
  } else if (s.vocab_size == 256000) {
    t.bos = 2, t.eos = 1, t.pad = 0;
  }
  return t;
}

std::string hf_siglip_config_json(const model::ModelSpec& spec, HfClass cls,
                                  const std::optional<HfTextIds>& ids) {
  return config_object(spec, cls, ids).dump(2) + "\n";
}

TensorList hf_siglip_state_dict(const TensorList& openclip, const model::ModelSpec& s,
                                HfClass cls) {
  Source src(openclip);
  TensorList out;
  for (const auto& link : name_map(s, cls)) {
    std::vector<at::Tensor> in;
    for (const auto& name : link.oc) {
      if (name == "logit_bias" && !src.has(name)) {
        in.push_back(at::zeros({}, src.any().options()));  // SiglipModel always has one
        continue;
      }
      if (!src.has(name)) throw core::Error("hf export: the model has no tensor '" + name + "'");
      in.push_back(src.take(name));
    }
    const auto hf = to_hf(link, in, s, src.any());
    for (std::size_t i = 0; i < hf.size(); ++i) out.emplace_back(link.hf[i], hf[i]);
  }
  const auto left = src.unused();
  if (!left.empty())
    throw InputError("model '" + s.name + "' has tensors transformers' " + name_of(cls) +
                     " has no place for: " + joined(left));
  return out;
}

bool is_hf_siglip_state_dict(const TensorList& tensors) {
  for (const auto& [name, t] : tensors)
    if (name == "text_model.head.weight" || name == "vision_model.head.probe") return true;
  return false;
}

TensorList openclip_from_hf_siglip(const TensorList& hf, const model::ModelSpec& s,
                                   const std::string& origin) {
  Source src(hf);
  const std::string patch = "vision_model.embeddings.patch_embedding.weight";
  const auto cls =
      src.has(patch) && src.take(patch).dim() == 2 ? HfClass::siglip2 : HfClass::siglip;
  const std::string why = hf_siglip_unsupported(s, cls);
  if (!why.empty())
    throw InputError("weights '" + origin + "' are transformers' " + name_of(cls) + "; model '" +
                     s.name + "' cannot hold them:" + why);
  check_config_beside(origin, s, cls);
  TensorList out;
  std::vector<std::string> missing;
  for (const auto& link : name_map(s, cls)) {
    std::vector<at::Tensor> in;
    for (const auto& name : link.hf)
      if (src.has(name))
        in.push_back(src.take(name));
      else
        missing.push_back(name);
    if (in.size() != link.hf.size()) continue;
    std::vector<at::Tensor> oc;
    try {
      oc = from_hf(link, in, s);
    } catch (const c10::Error& e) {
      throw InputError("weights '" + origin + "': " + joined(link.hf) + " do not fit model '" +
                       s.name + "' (" + e.what_without_backtrace() + ")");
    } catch (const InputError& e) {
      throw InputError("weights '" + origin + "' (transformers' " + name_of(cls) + ") do not " +
                       "fit model '" + s.name + "': " + e.what());
    }
    for (std::size_t i = 0; i < oc.size(); ++i) out.emplace_back(link.oc[i], oc[i]);
  }
  const auto unexpected = src.unused(".position_ids");  // older files save the buffers
  if (!missing.empty() || !unexpected.empty()) {
    std::string msg = "weights '" + origin + "' (transformers' " + name_of(cls) +
                      ") do not fit model '" + s.name + "':";
    if (!missing.empty())
      msg += "\n  missing keys (" + std::to_string(missing.size()) + "): " + joined(missing);
    if (!unexpected.empty())
      msg +=
          "\n  unexpected keys (" + std::to_string(unexpected.size()) + "): " + joined(unexpected);
    throw InputError(msg);
  }
  CLIPPER_INFO("weights '" << origin << "': transformers' " << name_of(cls)
                           << " names mapped to OpenCLIP's");
  return out;
}

void export_hf_siglip(const model::Clip& m, const model::ModelSpec& spec, HfClass cls,
                      const std::string& out_dir, const std::optional<HfTextIds>& ids) {
  check_hf_siglip_exportable(spec, cls);
  const auto tensors = hf_siglip_state_dict(model_state_dict(*m), spec, cls);
  const fs::path dir(out_dir);
  fs::create_directories(dir);
  save_safetensors((dir / "model.safetensors").string(), tensors, {{"format", "pt"}});
  core::write_file_atomic((dir / "config.json").string(), hf_siglip_config_json(spec, cls, ids));
  if (!write_preprocessor(spec, cls, dir))
    CLIPPER_WARN(
        "hf export: no preprocessor_config.json (transformers' SigLIP processors "
        "resize to a square without a crop or a pad; clipper's resize mode is '"
        << model::name_of(spec.resize_mode) << "')");
  else if (cls == HfClass::siglip2)
    CLIPPER_INFO("hf export: Siglip2ImageProcessor keeps the aspect ratio (up to "
                 << (spec.image_size / spec.patch_size) * (spec.image_size / spec.patch_size)
                 << " patches); square images are preprocessed as clipper does");
  if (!spec.init_logit_bias)
    CLIPPER_INFO("hf export: the model has no logit_bias; " << name_of(cls) << "'s is 0");
  CLIPPER_INFO("exported " << spec.name << " for transformers (" << name_of(cls) << ") to "
                           << out_dir);
}

}  // namespace clipper::io
