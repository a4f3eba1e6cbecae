#include "clipper/model/model_spec.hpp"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <variant>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/core/paths.hpp"
#include "clipper/core/text.hpp"

namespace clipper::model {
namespace {

namespace fs = std::filesystem;
using core::InputError;

// --- The field table ---------------------------------------------------------------------------
//
// Every key of an architecture file, once: its section, its key, the ModelSpec member it fills.
// The parser, the unknown-key check and its suggestions all read this table; defaults are the
// member initializers of ModelSpec. Keys that need more than a read (embed_dim, required;
// vision_cfg.layers, a number or a ResNet's list) have a reader of their own.

using Reader = void (*)(const YAML::Node& value, ModelSpec& spec, const std::string& where);
template <typename T>
using Member = T ModelSpec::*;
using Binding =
    std::variant<Member<std::int64_t>, Member<double>, Member<bool>, Member<std::string>,
                 Member<std::optional<double>>, Member<std::array<double, 3>>,
                 Member<ImageTowerKind>, Member<VisionPool>, Member<Activation>, Member<TextPool>,
                 Member<Interpolation>, Member<ResizeMode>, Reader>;

struct Field {
  const char* section;  // "" (top level), "vision_cfg", "text_cfg", "preprocess_cfg"
  const char* key;
  Binding bind;
};

void read_layers(const YAML::Node& v, ModelSpec& s, const std::string& where);
void read_proj_type(const YAML::Node& v, ModelSpec& s, const std::string& where);
void read_ignored_int(const YAML::Node& v, ModelSpec& s, const std::string& where);
void read_decoder_mlp_ratio(const YAML::Node& v, ModelSpec& s, const std::string& where);

const Field kFields[] = {
    {"", "embed_dim", &ModelSpec::embed_dim},
    {"", "quick_gelu", &ModelSpec::quick_gelu},
    {"", "init_logit_scale", &ModelSpec::init_logit_scale},
    {"", "init_logit_bias", &ModelSpec::init_logit_bias},
    {"", "custom_text", &ModelSpec::custom_text},
    {"", "tokenizer", &ModelSpec::tokenizer},
    {"vision_cfg", "tower", &ModelSpec::image_tower},
    {"vision_cfg", "timm_model_name", &ModelSpec::timm_model_name},
    {"vision_cfg", "image_size", &ModelSpec::image_size},
    {"vision_cfg", "width", &ModelSpec::vision_width},
    {"vision_cfg", "layers", read_layers},
    {"vision_cfg", "patch_size", &ModelSpec::patch_size},
    {"vision_cfg", "head_width", &ModelSpec::vision_head_width},
    {"vision_cfg", "mlp_ratio", &ModelSpec::vision_mlp_ratio},
    {"vision_cfg", "patch_dropout", &ModelSpec::patch_dropout},
    {"vision_cfg", "timm_pool", &ModelSpec::vision_pool},
    {"vision_cfg", "act", &ModelSpec::vision_act},
    {"vision_cfg", "norm_eps", &ModelSpec::vision_norm_eps},
    {"vision_cfg", "pos_embed_grid", &ModelSpec::pos_embed_grid},
    {"vision_cfg", "pos_embed_interp", &ModelSpec::pos_embed_interp},
    {"vision_cfg", "naflex_packing", &ModelSpec::naflex_packing},
    {"vision_cfg", "attentional_pool", &ModelSpec::vision_attn_pool},
    {"vision_cfg", "attn_pooler_queries", &ModelSpec::vision_attn_pool_queries},
    {"vision_cfg", "attn_pooler_heads", &ModelSpec::vision_attn_pool_heads},
    {"vision_cfg", "output_tokens", &ModelSpec::vision_output_tokens},
    {"text_cfg", "context_length", &ModelSpec::context_length},
    {"text_cfg", "vocab_size", &ModelSpec::vocab_size},
    {"text_cfg", "width", &ModelSpec::text_width},
    {"text_cfg", "heads", &ModelSpec::text_heads},
    {"text_cfg", "layers", &ModelSpec::text_layers},
    {"text_cfg", "mlp_ratio", &ModelSpec::text_mlp_ratio},
    {"text_cfg", "pool_type", &ModelSpec::text_pool},
    {"text_cfg", "eos_id", &ModelSpec::text_eos_id},
    {"text_cfg", "no_causal_mask", &ModelSpec::text_no_causal_mask},
    {"text_cfg", "proj_bias", &ModelSpec::text_proj_bias},
    {"text_cfg", "proj_type", read_proj_type},
    {"text_cfg", "act", &ModelSpec::text_act},
    {"text_cfg", "norm_eps", &ModelSpec::text_norm_eps},
    {"text_cfg", "tokenizer_clean", &ModelSpec::tokenizer_clean},
    {"text_cfg", "embed_cls", &ModelSpec::text_embed_cls},
    {"text_cfg", "pad_id", &ModelSpec::text_pad_id},
    {"text_cfg", "output_tokens", &ModelSpec::text_output_tokens},
    // CoCa's decoder. open_clip builds it from width, heads, layers and context_length only; the
    // other keys of its MultimodalCfg are read (the shipped files have them) and not used.
    {"multimodal_cfg", "width", &ModelSpec::decoder_width},
    {"multimodal_cfg", "heads", &ModelSpec::decoder_heads},
    {"multimodal_cfg", "layers", &ModelSpec::decoder_layers},
    {"multimodal_cfg", "context_length", &ModelSpec::decoder_context_length},
    {"multimodal_cfg", "vocab_size", read_ignored_int},
    {"multimodal_cfg", "dim_head", read_ignored_int},
    {"multimodal_cfg", "n_queries", read_ignored_int},
    {"multimodal_cfg", "attn_pooler_heads", read_ignored_int},
    {"multimodal_cfg", "mlp_ratio", read_decoder_mlp_ratio},
    {"preprocess_cfg", "mean", &ModelSpec::mean},
    {"preprocess_cfg", "std", &ModelSpec::std},
    {"preprocess_cfg", "interpolation", &ModelSpec::interpolation},
    {"preprocess_cfg", "resize_mode", &ModelSpec::resize_mode},
    {"preprocess_cfg", "max_seq_len", &ModelSpec::max_seq_len},
};
const char* const kSections[] = {"vision_cfg", "text_cfg", "multimodal_cfg", "preprocess_cfg"};

std::vector<std::string> keys_of(const std::string& section) {
  std::vector<std::string> keys;
  for (const auto& f : kFields)
    if (section == f.section) keys.push_back(f.key);
  if (section.empty())
    for (const char* s : kSections) keys.push_back(s);
  return keys;
}

void check_keys(const YAML::Node& node, const std::string& section, const std::string& origin) {
  if (!node.IsMap()) throw InputError(origin + ": '" + section + "' must be a mapping");
  const auto allowed = keys_of(section);
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    std::string msg =
        origin + ": unknown key '" + (section.empty() ? key : section + "." + key) + "'";
    const std::string hint = core::nearest(key, allowed);
    if (!hint.empty())
      msg += "; did you mean '" + hint + "'?";
    else
      msg += "; allowed: " + core::join(allowed, ", ");
    throw InputError(msg);
  }
}

template <typename T>
T as(const YAML::Node& v, const std::string& where) {
  try {
    return v.as<T>();
  } catch (const YAML::Exception&) {
    throw InputError(where + " has a value of the wrong type (line " +
                     std::to_string(v.Mark().line + 1) + ")");
  }
}

// The allowed words of an enum, for the error message: "a, b or c".
template <typename E>
std::string words(std::initializer_list<E> all) {
  std::string out;
  std::size_t i = 0;
  for (auto e : all) {
    if (i > 0) out += (i + 1 == all.size()) ? " or " : ", ";
    out += name_of(e);
    ++i;
  }
  return out;
}

template <typename E>
void read_choice(const YAML::Node& v, E& out, const std::string& where,
                 std::initializer_list<E> all) {
  const auto word = as<std::string>(v, where);
  if (const auto e = parse_choice(word, all)) {
    out = *e;
    return;
  }
  throw InputError(where + " must be " + words(all) + ", got '" + word + "'");
}

struct ReadValue {
  const YAML::Node& v;
  ModelSpec& s;
  const std::string& where;

  template <typename T>
  void operator()(Member<T> m) const {
    s.*m = as<T>(v, where);
  }
  void operator()(Member<std::optional<double>> m) const { s.*m = as<double>(v, where); }
  void operator()(Member<std::array<double, 3>> m) const {
    if (!v.IsSequence() || v.size() != 3) throw InputError(where + " must be a list of 3 numbers");
    for (std::size_t i = 0; i < 3; ++i) (s.*m)[i] = as<double>(v[i], where);
  }
  void operator()(Member<ImageTowerKind> m) const {
    read_choice(v, s.*m, where,
                {ImageTowerKind::vit, ImageTowerKind::resnet, ImageTowerKind::timm_vit,
                 ImageTowerKind::naflex_vit});
  }
  void operator()(Member<VisionPool> m) const {
    read_choice(v, s.*m, where, {VisionPool::map, VisionPool::avg});
  }
  void operator()(Member<Activation> m) const {
    read_choice(v, s.*m, where, {Activation::gelu, Activation::gelu_tanh, Activation::quick_gelu});
  }
  void operator()(Member<TextPool> m) const {
    read_choice(v, s.*m, where, {TextPool::argmax, TextPool::eos, TextPool::first, TextPool::last});
  }
  void operator()(Member<Interpolation> m) const {
    read_choice(v, s.*m, where, {Interpolation::bicubic, Interpolation::bilinear});
  }
  void operator()(Member<ResizeMode> m) const {
    read_choice(v, s.*m, where, {ResizeMode::shortest, ResizeMode::longest, ResizeMode::squash});
  }
  void operator()(Reader r) const { r(v, s, where); }
};

void read_layers(const YAML::Node& v, ModelSpec& s, const std::string& where) {
  if (v.IsSequence()) {
    s.vision_resnet_layers = as<std::vector<std::int64_t>>(v, where);
  } else {
    s.vision_layers = as<std::int64_t>(v, where);
  }
}

void read_proj_type(const YAML::Node& v, ModelSpec& s, const std::string& where) {
  const auto word = as<std::string>(v, where);
  if (word != "linear" && word != "none")
    throw InputError(where + " must be linear or none, got '" + word + "'");
  s.text_proj_none = word == "none";
}

void read_ignored_int(const YAML::Node& v, ModelSpec&, const std::string& where) {
  (void)as<std::int64_t>(v, where);
}

void read_decoder_mlp_ratio(const YAML::Node& v, ModelSpec&, const std::string& where) {
  if (as<double>(v, where) != 4.0)
    throw InputError(where + " must be 4: open_clip's CoCa decoder always has an MLP ratio of 4");
}

// The tower a file means when vision_cfg.tower is not given.
ImageTowerKind inferred_tower(const ModelSpec& s) {
  if (!s.vision_resnet_layers.empty()) return ImageTowerKind::resnet;
  if (!s.timm_model_name.empty()) return ImageTowerKind::timm_vit;
  return ImageTowerKind::vit;
}

void read_fields(const YAML::Node& root, ModelSpec& s, const std::string& origin) {
  for (const auto& f : kFields) {
    const std::string section = f.section;
    const YAML::Node node = section.empty() ? root : root[section];
    if (!node) continue;
    const YAML::Node v = node[f.key];
    if (!v || v.IsNull()) continue;
    const std::string where = origin + ": '" + (section.empty() ? "" : section + ".") + f.key + "'";
    std::visit(ReadValue{v, s, where}, f.bind);
  }
}

bool looks_like_path(const std::string& s) {
  return s.find('/') != std::string::npos ||
         (s.size() > 5 && (s.substr(s.size() - 5) == ".yaml" || s.substr(s.size() - 4) == ".yml"));
}

}  // namespace

std::int64_t ModelSpec::vision_heads() const {
  return is_resnet() ? vision_width * 32 / vision_head_width : vision_width / vision_head_width;
}

namespace {

// A spec check: throws InputError naming the model (and its file) with what was expected.
struct Need {
  std::string where;
  void operator()(bool ok, const std::string& what) const {
    if (!ok) throw InputError(where + ": " + what);
  }
};

void check_resnet(const ModelSpec& s, const Need& need) {
  need(s.vision_resnet_layers.size() == 4, "vision_cfg.layers of a ResNet must list 4 numbers");
  for (auto n : s.vision_resnet_layers) need(n > 0, "vision_cfg.layers entries must be positive");
  need(s.image_size % 32 == 0, "a ModifiedResNet needs image_size divisible by 32");
  need(s.vision_width % 2 == 0, "a ModifiedResNet needs an even width");
  need((s.vision_width * 32) % s.vision_head_width == 0,
       "vision_cfg.width*32 must be divisible by head_width");
}

void check_vit(const ModelSpec& s, const Need& need) {
  need(s.vision_resnet_layers.empty(),
       std::string("vision_cfg.layers is a list (a ResNet's) but vision_cfg.tower is ") +
           name_of(s.image_tower));
  need(s.vision_layers > 0, "vision_cfg.layers must be positive");
  // timm's patch embedding drops the pixels past the last whole patch (SO400M/14 at 384:
  // 27 x 27 patches); OpenCLIP's ViT wants whole patches.
  if (s.image_tower == ImageTowerKind::timm_vit)
    need(s.patch_size > 0 && s.image_size >= s.patch_size,
         "vision_cfg.image_size must be at least patch_size");
  else
    need(s.patch_size > 0 && s.image_size % s.patch_size == 0,
         "vision_cfg.image_size must be a multiple of patch_size");
  need(s.vision_width % s.vision_head_width == 0,
       "vision_cfg.width must be divisible by head_width");
}

void check_image_tower(const ModelSpec& s, const Need& need) {
  need(s.image_size > 0 && s.vision_width > 0, "vision_cfg.image_size and width must be positive");
  need(s.vision_head_width > 0, "vision_cfg.head_width must be positive");
  if (s.is_resnet())
    check_resnet(s, need);
  else
    check_vit(s, need);
  const bool naflex = s.image_tower == ImageTowerKind::naflex_vit;
  if (naflex) need(s.pos_embed_grid > 0, "vision_cfg.pos_embed_grid must be positive");
  need(s.max_seq_len >= 0, "preprocess_cfg.max_seq_len must be 0 (square pictures) or positive");
  need(s.max_seq_len == 0 || naflex,
       "preprocess_cfg.max_seq_len (NaFlex patch sequences) needs vision_cfg.tower naflex_vit");
  if (s.image_tower == ImageTowerKind::timm_vit || naflex)
    need(s.embed_dim == s.vision_width,
         "a timm trunk has no projection (open_clip's timm_proj none): embed_dim must equal "
         "vision_cfg.width");
  need(s.patch_dropout >= 0.0 && s.patch_dropout < 1.0,
       "vision_cfg.patch_dropout must be in [0, 1)");
}

void check_text_tower(const ModelSpec& s, const Need& need) {
  if (s.text_proj_none)
    need(s.embed_dim == s.text_width, "text_cfg.proj_type none needs embed_dim == text_cfg.width");
  need(s.context_length > 0 && s.vocab_size > 0,
       "text_cfg.context_length and vocab_size must be positive");
  need(s.text_width > 0 && s.text_layers > 0 && s.text_heads > 0,
       "text_cfg sizes must be positive");
  need(s.text_width % s.text_heads == 0, "text_cfg.width must be divisible by text_cfg.heads");
  const auto& tok = s.tokenizer;
  need(tok == "clip" || tok.rfind("sentencepiece:", 0) == 0 || tok.rfind("hf:", 0) == 0,
       "tokenizer must be 'clip', 'sentencepiece:PATH' or 'hf:NAME_OR_PATH', got '" + tok + "'");
  const auto& clean = s.tokenizer_clean;
  need(clean == "whitespace" || clean == "canonicalize" || clean == "lower",
       "text_cfg.tokenizer_clean must be whitespace, canonicalize or lower, got '" + clean + "'");
}

void check_attentional_pool(const ModelSpec& s, const Need& need) {
  need(s.image_tower == ImageTowerKind::vit,
       "vision_cfg.attentional_pool needs OpenCLIP's ViT (vision_cfg.tower vit)");
  need(s.vision_attn_pool_queries > 0 && s.vision_attn_pool_heads > 0 &&
           s.embed_dim % s.vision_attn_pool_heads == 0,
       "vision_cfg.attn_pooler_queries and attn_pooler_heads must be positive, and embed_dim "
       "divisible by attn_pooler_heads");
}

void check_coca(const ModelSpec& s, const Need& need) {
  need(s.image_tower == ImageTowerKind::vit,
       "a CoCa model (multimodal_cfg) needs OpenCLIP's ViT as image tower");
  need(s.text_embed_cls, "a CoCa model (multimodal_cfg) needs text_cfg.embed_cls: true");
  need(s.decoder_width > 0 && s.decoder_heads > 0 && s.decoder_layers > 0 &&
           s.decoder_width % s.decoder_heads == 0 && s.decoder_context_length > 0,
       "multimodal_cfg width, heads, layers and context_length must be positive, width "
       "divisible by heads");
  need(s.decoder_width == s.text_width,
       "multimodal_cfg.width must equal text_cfg.width (the decoder reads the text tokens)");
  need(s.decoder_width == s.image_token_width(),
       "multimodal_cfg.width must equal the image tokens' width (embed_dim with "
       "vision_cfg.attentional_pool, vision_cfg.width without)");
  need(s.vision_attn_pool_queries > 1 || !s.vision_attn_pool,
       "vision_cfg.attn_pooler_queries must be at least 2 (one pooled, the others tokens)");
}

}  // namespace

void ModelSpec::validate() const {
  const Need need{"model '" + name + "'" + (path.empty() ? "" : " (" + path + ")")};
  need(embed_dim > 0, "embed_dim must be positive");
  check_image_tower(*this, need);
  check_text_tower(*this, need);
  need(vision_norm_eps > 0 && text_norm_eps > 0, "norm_eps must be positive");
  need(vision_mlp_ratio > 0 && text_mlp_ratio > 0, "mlp_ratio must be positive");
  if (vision_attn_pool) check_attentional_pool(*this, need);
  if (coca) check_coca(*this, need);
}

ModelSpec parse_model_spec(const std::string& yaml_text, const std::string& name,
                           const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw InputError(origin + ": not valid YAML: " + e.what());
  }
  if (!root.IsMap()) throw InputError(origin + ": a model spec must be a YAML mapping");
  check_keys(root, "", origin);
  for (const char* section : {"vision_cfg", "text_cfg"})
    if (!root[section]) throw InputError(origin + ": '" + section + "' is required");
  for (const char* section : kSections)
    if (root[section]) check_keys(root[section], section, origin);
  ModelSpec s;
  s.name = name;
  s.embed_dim = 0;
  const bool tower_given = root["vision_cfg"]["tower"].IsDefined();
  s.coca = root["multimodal_cfg"].IsDefined();
  read_fields(root, s, origin);
  if (s.embed_dim <= 0) throw InputError(origin + ": 'embed_dim' is required (a positive int)");
  if (!tower_given) s.image_tower = inferred_tower(s);
  if (s.is_resnet()) {
    s.vision_layers = 0;
    s.patch_size = 0;
  }
  s.validate();
  return s;
}

std::vector<std::string> model_spec_dirs() {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("CLIPPER_MODEL_DIRS"))
    for (const auto& d : core::split(env, ':'))
      if (!d.empty()) dirs.push_back(d);
  for (const auto& share : core::share_dirs())
    dirs.push_back((fs::path(share) / "configs" / "models").string());
  return dirs;
}

std::vector<std::string> list_model_specs() {
  std::set<std::string> names;
  for (const auto& d : model_spec_dirs()) {
    std::error_code ec;
    if (!fs::is_directory(d, ec)) continue;
    for (const auto& e : fs::directory_iterator(d, ec))
      if (e.path().extension() == ".yaml") names.insert(e.path().stem().string());
  }
  return {names.begin(), names.end()};
}

void use_siglip_init(ModelSpec& spec) {
  spec.init_logit_scale = std::log(10.0);
  spec.init_logit_bias = -10.0;
}

void apply_overrides(ModelSpec& spec, const SpecOverrides& o) {
  std::string keys;
  auto note = [&keys](const std::string& kv) { keys += (keys.empty() ? "" : ", ") + kv; };
  if (o.image_size > 0) {
    spec.image_size = o.image_size;
    note("model.force_image_size=" + std::to_string(o.image_size));
  }
  if (o.quick_gelu) spec.quick_gelu = true;
  if (o.patch_dropout >= 0.0) {
    spec.patch_dropout = o.patch_dropout;
    note("model.force_patch_dropout=" + std::to_string(o.patch_dropout));
  }
  if (keys.empty()) return;
  try {
    spec.validate();
  } catch (const InputError& e) {
    throw InputError(std::string(e.what()) + " (with " + keys + ")");
  }
}

ModelSpec load_model_spec(const std::string& name_or_path) {
  if (name_or_path.empty()) throw InputError("no model name given (model.name)");
  std::error_code ec;
  if (looks_like_path(name_or_path)) {
    if (!fs::is_regular_file(name_or_path, ec))
      throw InputError("model spec file '" + name_or_path + "' does not exist");
    auto spec = parse_model_spec(core::read_file(name_or_path),
                                 fs::path(name_or_path).stem().string(), name_or_path);
    spec.path = name_or_path;
    return spec;
  }
  for (const auto& d : model_spec_dirs()) {
    const fs::path p = fs::path(d) / (name_or_path + ".yaml");
    if (fs::is_regular_file(p, ec)) {
      auto spec = parse_model_spec(core::read_file(p.string()), name_or_path, p.string());
      spec.path = p.string();
      return spec;
    }
  }
  const auto known = list_model_specs();
  std::string msg = "unknown model '" + name_or_path + "'";
  const std::string hint = core::nearest(name_or_path, known);
  if (!hint.empty()) msg += "; did you mean '" + hint + "'?";
  msg +=
      " Known models: " + (known.empty() ? std::string("(none found)") : core::join(known, ", ")) +
      " (searched: " + core::join(model_spec_dirs(), ", ") +
      "; add folders with CLIPPER_MODEL_DIRS or give a path to a .yaml file)";
  throw InputError(msg);
}

}  // namespace clipper::model
