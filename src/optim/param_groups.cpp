#include "clipper/optim/param_groups.hpp"

#include <torch/nn/module.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>

#include "clipper/core/error.hpp"

namespace clipper::optim {
namespace {

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

// `name` is the tensor `base` or lies inside the module `base`.
bool is(const std::string& name, const std::string& base) {
  return name == base || starts_with(name, base + ".");
}

bool is_any(const std::string& name, std::initializer_list<const char*> bases) {
  for (const char* b : bases)
    if (is(name, b)) return true;
  return false;
}

// "<prefix><i>.<rest>" -> i; -1 for any other name.
std::int64_t index_after(const std::string& name, const std::string& prefix) {
  if (!starts_with(name, prefix)) return -1;
  const char* begin = name.c_str() + prefix.size();
  char* end = nullptr;
  const long long i = std::strtoll(begin, &end, 10);
  return (end != begin && *end == '.') ? static_cast<std::int64_t>(i) : -1;
}

enum class Tower { none, image, text };

Tower tower_of(const std::string& name) {
  if (starts_with(name, "visual.")) return Tower::image;
  if (name == "logit_scale" || name == "logit_bias") return Tower::none;
  if (starts_with(name, "siglip2.")) return Tower::none;  // loss.siglip2's heads: the base lr
  return Tower::text;
}

// A text tower's name without the `text.` of a custom-text model (SigLIP), so both layouts read
// the same.
std::string text_local(const std::string& name) {
  return starts_with(name, "text.") ? name.substr(5) : name;
}

// How many layer groups each tower has, from the parameter names (frozen ones included, as
// OpenCLIP counts modules). Image towers: OpenCLIP's ViT, the ModifiedResNet, a timm trunk
// (visual.trunk.*: timm's group_matcher, [patch_embed, pos_embed] or NaFlex's [embeds], each
// block, [norm], [attn_pool]).
struct Layout {
  bool resnet = false, timm = false, timm_attn_pool = false;
  std::int64_t image_blocks = 0, text_blocks = 0;
  bool image_head = false, text_head = false;

  explicit Layout(const torch::nn::Module& model) {
    for (const auto& item : model.named_parameters(/*recurse=*/true)) {
      const std::string& n = item.key();
      const std::string t = text_local(n);
      resnet = resnet || is(n, "visual.layer1");
      timm = timm || is(n, "visual.trunk");
      timm_attn_pool = timm_attn_pool || is(n, "visual.trunk.attn_pool");
      image_blocks = std::max({image_blocks, index_after(n, "visual.transformer.resblocks.") + 1,
                               index_after(n, "visual.trunk.blocks.") + 1});
      text_blocks = std::max(text_blocks, index_after(t, "transformer.resblocks.") + 1);
      image_head = image_head || is_any(n, {"visual.proj", "visual.attnpool"});
      text_head = text_head || is(t, "text_projection");
    }
  }
  std::int64_t image_groups() const {
    if (timm) return 1 + image_blocks + 1 + (timm_attn_pool ? 1 : 0);
    return (resnet ? 5 : 1 + image_blocks) + (image_head ? 1 : 0);
  }
  std::int64_t text_groups() const { return 1 + text_blocks + (text_head ? 1 : 0); }

  // The parameter's layer group in the image tower, input to output; -1: in none.
  std::int64_t image_group(const std::string& n) const {
    if (resnet) {
      if (is_any(n, {"visual.conv1", "visual.bn1", "visual.conv2", "visual.bn2", "visual.conv3",
                     "visual.bn3"}))
        return 0;
      for (std::int64_t k = 1; k <= 4; ++k)
        if (is(n, "visual.layer" + std::to_string(k))) return k;
      return is(n, "visual.attnpool") ? 5 : -1;
    }
    if (timm) {
      if (is_any(n, {"visual.trunk.patch_embed", "visual.trunk.pos_embed", "visual.trunk.embeds"}))
        return 0;
      const auto block = index_after(n, "visual.trunk.blocks.");
      if (block >= 0) return 1 + block;
      if (is_any(n, {"visual.trunk.norm", "visual.trunk.fc_norm"})) return 1 + image_blocks;
      return is(n, "visual.trunk.attn_pool") ? 2 + image_blocks : -1;
    }
    if (is_any(n, {"visual.conv1", "visual.class_embedding", "visual.positional_embedding",
                   "visual.ln_pre"}))
      return 0;
    const auto block = index_after(n, "visual.transformer.resblocks.");
    if (block >= 0) return 1 + block;
    if (is(n, "visual.ln_post")) return image_blocks;
    return is(n, "visual.proj") ? image_blocks + 1 : -1;
  }
  std::int64_t text_group(const std::string& name) const {
    const std::string n = text_local(name);
    if (is_any(n, {"token_embedding", "positional_embedding", "cls_emb"})) return 0;
    const auto block = index_after(n, "transformer.resblocks.");
    if (block >= 0) return 1 + block;
    if (is(n, "ln_final")) return text_blocks;
    return is(n, "text_projection") ? text_blocks + 1 : -1;
  }
};

void check_factor(const char* key, double value, bool decay) {
  const bool ok = decay ? (value > 0.0 && value <= 1.0) : value >= 0.0;
  if (!ok)
    throw core::InputError(std::string(key) + " must be " + (decay ? "in (0, 1]" : ">= 0") +
                           ", got " + std::to_string(value));
}

// decay^(groups - 1 - group); 1 for a parameter in no layer group.
double depth_scale(double decay, std::int64_t group, std::int64_t groups) {
  return group < 0 ? 1.0 : std::pow(decay, static_cast<double>(groups - 1 - group));
}

}  // namespace

config::NoDecay no_decay_rule(const config::OptimConfig& o) {
  if (o.no_decay != config::NoDecay::automatic) return o.no_decay;
  const bool layer_decay = o.image_layer_decay != 1.0 || o.text_layer_decay != 1.0;
  return layer_decay ? config::NoDecay::modern : config::NoDecay::openclip3;
}

bool excluded_from_decay(const std::string& name, const at::Tensor& param, config::NoDecay rule) {
  if (rule == config::NoDecay::modern)  // no_weight_decay(): the model's and its towers'
    return param.dim() <= 1 || name == "positional_embedding" ||
           name == "visual.positional_embedding" || name == "visual.class_embedding" ||
           name == "text.positional_embedding" || name == "visual.trunk.pos_embed" ||
           name == "visual.trunk.embeds.pos_embed";
  return param.dim() < 2 || name.find("bn") != std::string::npos ||
         name.find("ln") != std::string::npos || name.find("bias") != std::string::npos ||
         name.find("logit_scale") != std::string::npos;
}

std::vector<ParamGroup> make_param_groups(const torch::nn::Module& model, double weight_decay,
                                          config::NoDecay rule) {
  ParamGroup decay, no_decay;
  decay.weight_decay = weight_decay;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (!item.value().requires_grad()) continue;
    ParamGroup& g = excluded_from_decay(item.key(), item.value(), rule) ? no_decay : decay;
    g.names.push_back(item.key());
    g.params.push_back(item.value());
  }
  return {decay, no_decay};
}

std::vector<std::pair<std::string, double>> lr_scales(const torch::nn::Module& model,
                                                      const config::OptimConfig& o) {
  check_factor("optim.image_layer_decay", o.image_layer_decay, true);
  check_factor("optim.text_layer_decay", o.text_layer_decay, true);
  check_factor("optim.image_lr", o.image_lr, false);
  check_factor("optim.text_lr", o.text_lr, false);
  const Layout layout(model);
  std::vector<std::pair<std::string, double>> out;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    const std::string& n = item.key();
    double scale = 1.0;
    if (tower_of(n) == Tower::image)
      scale = o.image_lr *
              depth_scale(o.image_layer_decay, layout.image_group(n), layout.image_groups());
    else if (tower_of(n) == Tower::text)
      scale =
          o.text_lr * depth_scale(o.text_layer_decay, layout.text_group(n), layout.text_groups());
    out.emplace_back(n, scale);
  }
  return out;
}

std::vector<ParamGroup> make_param_groups(const torch::nn::Module& model,
                                          const config::OptimConfig& o) {
  const auto scales = lr_scales(model, o);
  const auto rule = no_decay_rule(o);
  const auto params = model.named_parameters(/*recurse=*/true);
  // Keyed by (-scale, undecayed): largest scale first, the decayed group before the other.
  std::map<std::pair<double, bool>, ParamGroup> groups;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& p = params[i].value();
    if (!p.requires_grad()) continue;
    const bool no_wd = excluded_from_decay(params[i].key(), p, rule);
    ParamGroup& g = groups[{-scales[i].second, no_wd}];
    g.weight_decay = no_wd ? 0.0 : o.weight_decay;
    g.lr_scale = scales[i].second;
    g.names.push_back(params[i].key());
    g.params.push_back(p);
  }
  const bool plain = std::all_of(groups.begin(), groups.end(),
                                 [](const auto& kv) { return kv.second.lr_scale == 1.0; });
  if (plain) return make_param_groups(model, o.weight_decay, rule);  // always the same two groups
  std::vector<ParamGroup> out;
  for (auto& [key, g] : groups) out.push_back(std::move(g));
  return out;
}

}  // namespace clipper::optim
