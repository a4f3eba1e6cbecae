#include "clipper/model/naflex_patches.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "clipper/core/error.hpp"

namespace clipper::model {

using core::InputError;

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

NaflexBatch naflex_batch_from_grids(const at::Tensor& patches, const at::Tensor& grids) {
  if (!patches.defined() || patches.dim() != 3)
    throw InputError("NaFlex: patches must be [B, N, P*P*3]");
  const auto b = patches.size(0), n = patches.size(1);
  if (!grids.defined() || grids.dim() != 2 || grids.size(0) != b || grids.size(1) != 2)
    throw InputError("NaFlex: patch grids must be [B, 2] (rows, columns), one per picture");
  const auto g = grids.to(at::kCPU, at::kLong).contiguous();
  const auto* hw = g.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < b; ++i)
    if (hw[2 * i] < 1 || hw[2 * i + 1] < 1 || hw[2 * i] * hw[2 * i + 1] > n)
      throw InputError("NaFlex: picture " + std::to_string(i) + " has a grid of " +
                       std::to_string(hw[2 * i]) + "x" + std::to_string(hw[2 * i + 1]) +
                       " patches, which does not fit its " + std::to_string(n) + " slots");
  const auto dev = patches.device();
  const auto opts = at::TensorOptions().dtype(at::kLong).device(dev);
  const auto gd = g.to(dev);
  const auto idx = at::arange(n, opts).unsqueeze(0);  // [1, N]
  const auto w = gd.select(1, 1).unsqueeze(1);        // [B, 1]
  NaflexBatch out;
  out.patches = patches;
  out.valid = idx.lt(gd.select(1, 0).unsqueeze(1) * w);
  out.coord = at::stack({idx.div(w, "floor"), idx.remainder(w)}, 2)
                  .masked_fill(~out.valid.unsqueeze(-1), 0);
  return out;
}

NaflexPacking naflex_pack(const std::vector<std::int64_t>& lengths, std::int64_t row_len) {
  if (row_len < 1) throw InputError("NaFlex packing: rows must hold at least one token");
  NaflexPacking p;
  p.row_len = row_len;
  p.row.assign(lengths.size(), 0);
  p.offset.assign(lengths.size(), 0);
  std::vector<std::size_t> order(lengths.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return lengths[a] > lengths[b]; });
  std::vector<std::int64_t> used;  // tokens taken in each row so far
  for (const auto i : order) {
    const auto n = lengths[i];
    if (n < 0 || n > row_len)
      throw InputError("NaFlex packing: picture " + std::to_string(i) + " has " +
                       std::to_string(n) + " patches, rows hold " + std::to_string(row_len));
    std::size_t r = 0;
    while (r < used.size() && used[r] + n > row_len) ++r;
    if (r == used.size()) used.push_back(0);
    p.row[i] = static_cast<std::int64_t>(r);
    p.offset[i] = used[r];
    used[r] += n;
    p.tokens += n;
  }
  p.rows = static_cast<std::int64_t>(used.size());
  return p;
}

}  // namespace clipper::model
