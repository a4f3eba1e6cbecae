#pragma once
// The choices of a model's preprocess_cfg and text_cfg that are words in the files (OpenCLIP's
// spelling), parsed once into these enums by parse_model_spec; name_of gives the spelling back
// (for the exports). Header-only, so that the image pipeline (data) uses them without linking
// the model part.
#include <optional>
#include <string>

namespace clipper::model {

// OpenCLIP's preprocess_cfg.resize_mode for evaluation (image_transform(is_train=False)):
// shortest: the shorter side to S, then the centre S x S (Resize(S) + CenterCrop(S));
// longest: the longer side to S, then padded to S x S with black, centred (ResizeKeepRatio(S,
//   longest=1) + CenterCropOrPad(S));
// squash: both sides to S, the aspect ratio not kept (Resize((S, S))).
enum class ResizeMode { shortest, longest, squash };
// OpenCLIP's preprocess_cfg.interpolation: PIL's bicubic or bilinear filter (antialiased when
// shrinking). Training's RandomResizedCrop is bicubic whatever this says, as open_clip's.
enum class Interpolation { bicubic, bilinear };
// OpenCLIP's text_cfg.pool_type: which token's output is the text feature. argmax: the largest
// id (the CLIP tokenizer's end-of-text); eos: the first text_cfg.eos_id; first; last.
enum class TextPool { argmax, eos, first, last };

inline const char* name_of(ResizeMode m) {
  switch (m) {
    case ResizeMode::longest:
      return "longest";
    case ResizeMode::squash:
      return "squash";
    default:
      return "shortest";
  }
}
inline const char* name_of(Interpolation i) {
  return i == Interpolation::bilinear ? "bilinear" : "bicubic";
}
inline const char* name_of(TextPool p) {
  switch (p) {
    case TextPool::eos:
      return "eos";
    case TextPool::first:
      return "first";
    case TextPool::last:
      return "last";
    default:
      return "argmax";
  }
}

inline std::optional<ResizeMode> parse_resize_mode(const std::string& s) {
  for (auto m : {ResizeMode::shortest, ResizeMode::longest, ResizeMode::squash})
    if (s == name_of(m)) return m;
  return std::nullopt;
}
inline std::optional<Interpolation> parse_interpolation(const std::string& s) {
  for (auto i : {Interpolation::bicubic, Interpolation::bilinear})
    if (s == name_of(i)) return i;
  return std::nullopt;
}
inline std::optional<TextPool> parse_text_pool(const std::string& s) {
  for (auto p : {TextPool::argmax, TextPool::eos, TextPool::first, TextPool::last})
    if (s == name_of(p)) return p;
  return std::nullopt;
}

}  // namespace clipper::model
