#include "clipper/model/model_spec.hpp"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/core/paths.hpp"
#include "clipper/core/text.hpp"

namespace clipper::model {
namespace {

namespace fs = std::filesystem;
using core::InputError;

const std::vector<std::string> kTopKeys = {"embed_dim",       "quick_gelu",    "init_logit_scale",
                                           "init_logit_bias", "vision_cfg",    "text_cfg",
                                           "tokenizer",       "preprocess_cfg"};
const std::vector<std::string> kVisionKeys = {
    "image_size", "layers", "width", "patch_size", "head_width", "mlp_ratio", "patch_dropout"};
const std::vector<std::string> kTextKeys = {"context_length", "vocab_size", "width",     "heads",
                                            "layers",         "mlp_ratio",  "pool_type", "eos_id"};
const std::vector<std::string> kPreprocessKeys = {"mean", "std", "interpolation", "resize_mode"};

void check_keys(const YAML::Node& node, const std::vector<std::string>& allowed,
                const std::string& where, const std::string& origin) {
  if (!node.IsMap()) throw InputError(origin + ": '" + where + "' must be a mapping");
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    std::string msg = origin + ": unknown key '" + (where.empty() ? key : where + "." + key) + "'";
    const std::string hint = core::nearest(key, allowed);
    if (!hint.empty())
      msg += "; did you mean '" + hint + "'?";
    else
      msg += "; allowed: " + core::join(allowed, ", ");
    throw InputError(msg);
  }
}

template <typename T>
T get(const YAML::Node& node, const std::string& key, const std::string& where,
      const std::string& origin, T fallback) {
  const YAML::Node v = node[key];
  if (!v || v.IsNull()) return fallback;
  try {
    return v.as<T>();
  } catch (const YAML::Exception&) {
    throw InputError(origin + ": '" + where + key + "' has a value of the wrong type (line " +
                     std::to_string(v.Mark().line + 1) + ")");
  }
}

std::array<double, 3> get_triple(const YAML::Node& node, const std::string& key,
                                 const std::string& origin, std::array<double, 3> fallback) {
  const YAML::Node v = node[key];
  if (!v) return fallback;
  if (!v.IsSequence() || v.size() != 3)
    throw InputError(origin + ": 'preprocess_cfg." + key + "' must be a list of 3 numbers");
  std::array<double, 3> out{};
  for (std::size_t i = 0; i < 3; ++i) out[i] = v[i].as<double>();
  return out;
}

// A word of the file parsed into its enum; an unknown one is an InputError naming the key and
// the words allowed.
template <typename E>
E get_choice(const YAML::Node& node, const std::string& key, const std::string& where,
             const std::string& origin, E fallback, std::optional<E> (*parse)(const std::string&),
             const char* allowed) {
  const std::string word = get<std::string>(node, key, where, origin, name_of(fallback));
  if (const auto e = parse(word)) return *e;
  throw InputError(origin + ": '" + where + key + "' must be " + allowed + ", got '" + word + "'");
}

bool looks_like_path(const std::string& s) {
  return s.find('/') != std::string::npos ||
         (s.size() > 5 && (s.substr(s.size() - 5) == ".yaml" || s.substr(s.size() - 4) == ".yml"));
}

}  // namespace

std::int64_t ModelSpec::vision_heads() const {
  return is_resnet() ? vision_width * 32 / vision_head_width : vision_width / vision_head_width;
}

void ModelSpec::validate() const {
  const std::string where = "model '" + name + "'" + (path.empty() ? "" : " (" + path + ")");
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) throw InputError(where + ": " + what);
  };
  need(embed_dim > 0, "embed_dim must be positive");
  need(image_size > 0 && vision_width > 0, "vision_cfg.image_size and width must be positive");
  need(vision_head_width > 0, "vision_cfg.head_width must be positive");
  if (is_resnet()) {
    need(vision_resnet_layers.size() == 4, "vision_cfg.layers of a ResNet must list 4 numbers");
    for (auto n : vision_resnet_layers) need(n > 0, "vision_cfg.layers entries must be positive");
    need(image_size % 32 == 0, "a ModifiedResNet needs image_size divisible by 32");
    need(vision_width % 2 == 0, "a ModifiedResNet needs an even width");
    need((vision_width * 32) % vision_head_width == 0,
         "vision_cfg.width*32 must be divisible by head_width");
  } else {
    need(vision_layers > 0, "vision_cfg.layers must be positive");
    need(patch_size > 0 && image_size % patch_size == 0,
         "vision_cfg.image_size must be a multiple of patch_size");
    need(vision_width % vision_head_width == 0, "vision_cfg.width must be divisible by head_width");
  }
  need(vision_mlp_ratio > 0 && text_mlp_ratio > 0, "mlp_ratio must be positive");
  need(patch_dropout >= 0.0 && patch_dropout < 1.0, "vision_cfg.patch_dropout must be in [0, 1)");
  need(context_length > 0 && vocab_size > 0,
       "text_cfg.context_length and vocab_size must be positive");
  need(text_width > 0 && text_layers > 0 && text_heads > 0, "text_cfg sizes must be positive");
  need(text_width % text_heads == 0, "text_cfg.width must be divisible by text_cfg.heads");
  need(tokenizer == "clip" || tokenizer.rfind("sentencepiece:", 0) == 0,
       "tokenizer must be 'clip' or 'sentencepiece:PATH', got '" + tokenizer + "'");
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
  check_keys(root, kTopKeys, "", origin);
  ModelSpec s;
  s.name = name;
  s.embed_dim = get<std::int64_t>(root, "embed_dim", "", origin, 0);
  if (s.embed_dim <= 0) throw InputError(origin + ": 'embed_dim' is required (a positive int)");
  s.quick_gelu = get<bool>(root, "quick_gelu", "", origin, false);
  s.init_logit_scale = get<double>(root, "init_logit_scale", "", origin, s.init_logit_scale);
  if (root["init_logit_bias"] && !root["init_logit_bias"].IsNull())
    s.init_logit_bias = get<double>(root, "init_logit_bias", "", origin, 0.0);
  s.tokenizer = get<std::string>(root, "tokenizer", "", origin, "clip");

  const YAML::Node v = root["vision_cfg"];
  if (!v) throw InputError(origin + ": 'vision_cfg' is required");
  check_keys(v, kVisionKeys, "vision_cfg", origin);
  s.image_size = get<std::int64_t>(v, "image_size", "vision_cfg.", origin, 224);
  s.vision_width = get<std::int64_t>(v, "width", "vision_cfg.", origin, 768);
  s.vision_head_width = get<std::int64_t>(v, "head_width", "vision_cfg.", origin, 64);
  s.vision_mlp_ratio = get<double>(v, "mlp_ratio", "vision_cfg.", origin, 4.0);
  s.patch_dropout = get<double>(v, "patch_dropout", "vision_cfg.", origin, 0.0);
  const YAML::Node layers = v["layers"];
  if (layers && layers.IsSequence()) {
    s.vision_resnet_layers = get<std::vector<std::int64_t>>(v, "layers", "vision_cfg.", origin, {});
    s.vision_layers = 0;
    s.patch_size = 0;
  } else {
    s.vision_layers = get<std::int64_t>(v, "layers", "vision_cfg.", origin, 12);
    s.patch_size = get<std::int64_t>(v, "patch_size", "vision_cfg.", origin, 16);
  }

  const YAML::Node t = root["text_cfg"];
  if (!t) throw InputError(origin + ": 'text_cfg' is required");
  check_keys(t, kTextKeys, "text_cfg", origin);
  s.context_length = get<std::int64_t>(t, "context_length", "text_cfg.", origin, 77);
  s.vocab_size = get<std::int64_t>(t, "vocab_size", "text_cfg.", origin, 49408);
  s.text_width = get<std::int64_t>(t, "width", "text_cfg.", origin, 512);
  s.text_heads = get<std::int64_t>(t, "heads", "text_cfg.", origin, 8);
  s.text_layers = get<std::int64_t>(t, "layers", "text_cfg.", origin, 12);
  s.text_mlp_ratio = get<double>(t, "mlp_ratio", "text_cfg.", origin, 4.0);
  s.text_pool = get_choice(t, "pool_type", "text_cfg.", origin, TextPool::argmax, parse_text_pool,
                           "argmax, eos, first or last");
  s.text_eos_id = get<std::int64_t>(t, "eos_id", "text_cfg.", origin, 2);

  if (const YAML::Node p = root["preprocess_cfg"]) {
    check_keys(p, kPreprocessKeys, "preprocess_cfg", origin);
    s.mean = get_triple(p, "mean", origin, s.mean);
    s.std = get_triple(p, "std", origin, s.std);
    s.interpolation =
        get_choice(p, "interpolation", "preprocess_cfg.", origin, Interpolation::bicubic,
                   parse_interpolation, "bicubic or bilinear");
    s.resize_mode = get_choice(p, "resize_mode", "preprocess_cfg.", origin, ResizeMode::shortest,
                               parse_resize_mode, "shortest, longest or squash");
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
