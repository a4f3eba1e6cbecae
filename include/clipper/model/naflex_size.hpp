#pragma once
// The NaFlex size rule (SigLIP 2, timm 1.0.31's get_image_size_for_seq, transformers'
// get_image_size_for_max_num_patches): the size a picture is resized to, keeping its aspect ratio,
// so that its patch grid fits a token budget. Header-only, so that the image pipeline (data)
// decides a sample's patch count without linking the model part.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>

#include "clipper/core/error.hpp"

namespace clipper::model {

namespace naflex_detail {
// A side scaled by `ratio`, rounded up to whole patches, at least one patch.
inline std::int64_t scaled_side(std::int64_t side, double ratio, std::int64_t patch) {
  const double scaled = static_cast<double>(side) * ratio;
  const auto rounded =
      patch * static_cast<std::int64_t>(std::ceil(scaled / static_cast<double>(patch)));
  return std::max(rounded, patch);
}
}  // namespace naflex_detail

// The size (height, width) a picture of `height` x `width` pixels is resized to under a budget
// of `max_tokens` patches of `patch` pixels: timm's get_image_size_for_seq (its binary search
// for the largest scale whose patch-rounded size fits, each side at least one patch). Throws
// InputError for a budget below one patch or a picture timm's search cannot scale.
inline std::pair<std::int64_t, std::int64_t> naflex_image_size(std::int64_t height,
                                                               std::int64_t width,
                                                               std::int64_t patch,
                                                               std::int64_t max_tokens) {
  using core::InputError;
  using naflex_detail::scaled_side;
  if (patch <= 0)
    throw InputError("NaFlex patch size must be positive, got " + std::to_string(patch));
  if (height <= 0 || width <= 0)
    throw InputError("NaFlex: a picture of " + std::to_string(height) + "x" +
                     std::to_string(width) + " pixels has nothing to cut into patches");
  if (max_tokens < 1)
    throw InputError("NaFlex token budget must be at least 1 patch, got " +
                     std::to_string(max_tokens));
  auto fits = [&](double ratio) {
    return (scaled_side(height, ratio, patch) / patch) *
               (scaled_side(width, ratio, patch) / patch) <=
           max_tokens;
  };
  // timm's search, step for step: the largest ratio in [1e-6, 100] that fits, to 1e-5.
  constexpr double eps = 1e-5;
  double lo = eps / 10.0, hi = 100.0;
  while (hi - lo >= eps) {
    const double mid = (lo + hi) / 2.0;
    if (fits(mid))
      lo = mid;
    else
      hi = mid;
  }
  if (lo <= eps || lo >= 100.0)
    throw InputError("NaFlex: no scale of a " + std::to_string(height) + "x" +
                     std::to_string(width) + " picture fits " + std::to_string(max_tokens) +
                     " patches of " + std::to_string(patch) + " pixels (timm searches 1e-5..100)");
  return {scaled_side(height, lo, patch), scaled_side(width, lo, patch)};
}

}  // namespace clipper::model
