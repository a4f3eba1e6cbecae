#include "clipper/model/naflex_patches.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "clipper/core/error.hpp"

namespace clipper::model {

using core::InputError;

namespace {

// A side scaled by `ratio`, rounded up to whole patches, at least one patch.
std::int64_t scaled_side(std::int64_t side, double ratio, std::int64_t patch) {
  const double scaled = static_cast<double>(side) * ratio;
  const auto rounded =
      patch * static_cast<std::int64_t>(std::ceil(scaled / static_cast<double>(patch)));
  return std::max(rounded, patch);
}

}  // namespace

std::pair<std::int64_t, std::int64_t> naflex_image_size(std::int64_t height, std::int64_t width,
                                                        std::int64_t patch,
                                                        std::int64_t max_tokens) {
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

NaflexPatches naflex_patchify(const at::Tensor& image, std::int64_t patch, std::int64_t max_tokens,
                              Interpolation interpolation) {
  if (image.dim() != 3 || image.size(0) != 3)
    throw InputError("NaFlex: a picture must be [3, H, W], got " + std::to_string(image.dim()) +
                     " dimensions");
  const auto [h, w] = naflex_image_size(image.size(1), image.size(2), patch, max_tokens);
  at::Tensor x = image.is_floating_point() ? image : image.to(at::kFloat);
  if (h != image.size(1) || w != image.size(2)) {
    auto batch = x.unsqueeze(0);
    batch = interpolation == Interpolation::bicubic
                ? at::_upsample_bicubic2d_aa(batch, {h, w}, /*align_corners=*/false)
                : at::_upsample_bilinear2d_aa(batch, {h, w}, /*align_corners=*/false);
    x = batch.squeeze(0);
  }
  const auto batch = naflex_patchify_batch(x.unsqueeze(0), patch);
  NaflexPatches out;
  out.patches = batch.patches[0];
  out.coord = batch.coord[0];
  out.grid_h = h / patch;
  out.grid_w = w / patch;
  return out;
}

NaflexBatch naflex_patchify_batch(const at::Tensor& images, std::int64_t patch) {
  if (images.dim() != 4 || images.size(1) != 3)
    throw InputError("NaFlex: images must be [B, 3, H, W], got " + std::to_string(images.dim()) +
                     " dimensions");
  const auto b = images.size(0), h = images.size(2), w = images.size(3);
  if (h % patch != 0 || w % patch != 0 || h == 0 || w == 0)
    throw InputError("NaFlex: images of " + std::to_string(h) + "x" + std::to_string(w) +
                     " are not whole patches of " + std::to_string(patch) +
                     " pixels (resize them with naflex_patchify)");
  const auto nh = h / patch, nw = w / patch;
  NaflexBatch out;
  out.patches = images.reshape({b, 3, nh, patch, nw, patch})
                    .permute({0, 2, 4, 3, 5, 1})
                    .reshape({b, nh * nw, patch * patch * 3});
  const auto opts = at::TensorOptions().dtype(at::kLong).device(images.device());
  auto coord =
      at::stack({at::arange(nh, opts).repeat_interleave(nw), at::arange(nw, opts).repeat({nh})}, 1);
  out.coord = coord.unsqueeze(0).expand({b, nh * nw, 2});
  out.valid = at::ones({b, nh * nw}, opts.dtype(at::kBool));
  return out;
}

NaflexBatch naflex_collate(const std::vector<NaflexPatches>& items, std::int64_t seq_len) {
  if (items.empty()) throw InputError("NaFlex: nothing to collate (no pictures)");
  std::int64_t longest = 0;
  for (const auto& it : items) longest = std::max(longest, it.patches.size(0));
  if (seq_len <= 0) seq_len = longest;
  if (longest > seq_len)
    throw InputError("NaFlex: a picture of " + std::to_string(longest) +
                     " patches does not fit a sequence of " + std::to_string(seq_len));
  const auto b = static_cast<std::int64_t>(items.size());
  const auto& first = items.front().patches;
  NaflexBatch out;
  out.patches = at::zeros({b, seq_len, first.size(1)}, first.options());
  out.coord = at::zeros({b, seq_len, 2}, first.options().dtype(at::kLong));
  out.valid = at::zeros({b, seq_len}, first.options().dtype(at::kBool));
  for (std::int64_t i = 0; i < b; ++i) {
    const auto& it = items[static_cast<std::size_t>(i)];
    const auto n = it.patches.size(0);
    if (it.patches.size(1) != first.size(1))
      throw InputError("NaFlex: picture " + std::to_string(i) + " has patches of " +
                       std::to_string(it.patches.size(1)) + " values, picture 0 of " +
                       std::to_string(first.size(1)));
    out.patches[i].narrow(0, 0, n).copy_(it.patches);
    out.coord[i].narrow(0, 0, n).copy_(it.coord);
    out.valid[i].narrow(0, 0, n).fill_(true);
  }
  return out;
}

}  // namespace clipper::model
