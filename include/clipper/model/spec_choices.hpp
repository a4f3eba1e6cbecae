#pragma once
// The choices of an architecture file that are words (OpenCLIP's and timm's spelling), parsed
// once into these enums by parse_model_spec; name_of gives the spelling back for the exports.
// Header-only, as preprocess.hpp.
#include <optional>
#include <string>

namespace clipper::model {

// Which image tower builds vision_cfg (the tower registry, image_tower.hpp):
// vit: OpenCLIP's VisionTransformer (class token, ln_pre, proj), names visual.conv1, ...;
// resnet: OpenAI's ModifiedResNet (vision_cfg.layers is a list of 4);
// timm_vit: timm's VisionTransformer as open_clip wraps it (visual.trunk.*): SigLIP's trunk;
// naflex_vit: timm's NaFlexVit (visual.trunk.embeds.*): SigLIP 2 NaFlex, patches at native
// aspect ratio with coordinates and a validity mask (naflex_vit.hpp).
enum class ImageTowerKind { vit, resnet, timm_vit, naflex_vit };
// A timm trunk's pooling (open_clip's vision_cfg.timm_pool): map, the attention pool over a
// learned latent (timm's AttentionPoolLatent); avg, the mean of the patch tokens (timm "avg").
enum class VisionPool { map, avg };
// The MLP activation: exact GELU, GELU's tanh approximation (SigLIP 2; timm GELUTanh, open_clip
// act_kwargs.approximate tanh), or OpenAI's x * sigmoid(1.702 x).
enum class Activation { gelu, gelu_tanh, quick_gelu };

inline const char* name_of(ImageTowerKind k) {
  switch (k) {
    case ImageTowerKind::resnet:
      return "resnet";
    case ImageTowerKind::timm_vit:
      return "timm_vit";
    case ImageTowerKind::naflex_vit:
      return "naflex_vit";
    default:
      return "vit";
  }
}
inline const char* name_of(VisionPool p) {
  return p == VisionPool::avg ? "avg" : "map";
}
inline const char* name_of(Activation a) {
  switch (a) {
    case Activation::gelu_tanh:
      return "gelu_tanh";
    case Activation::quick_gelu:
      return "quick_gelu";
    default:
      return "gelu";
  }
}

template <typename E>
std::optional<E> parse_choice(const std::string& word, std::initializer_list<E> all) {
  for (auto e : all)
    if (word == name_of(e)) return e;
  return std::nullopt;
}
inline std::optional<ImageTowerKind> parse_image_tower(const std::string& s) {
  return parse_choice(s, {ImageTowerKind::vit, ImageTowerKind::resnet, ImageTowerKind::timm_vit,
                          ImageTowerKind::naflex_vit});
}
inline std::optional<VisionPool> parse_vision_pool(const std::string& s) {
  return parse_choice(s, {VisionPool::map, VisionPool::avg});
}
inline std::optional<Activation> parse_activation(const std::string& s) {
  return parse_choice(s, {Activation::gelu, Activation::gelu_tanh, Activation::quick_gelu});
}

}  // namespace clipper::model
