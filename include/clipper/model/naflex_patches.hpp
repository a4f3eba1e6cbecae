#pragma once
// NaFlex inputs (SigLIP 2's native aspect ratio and resolution), as timm 1.0.31's NaFlex data
// code makes them: a picture is resized, keeping its aspect ratio, to the largest multiple of the
// patch size whose patch count fits a token budget, then cut into patches, each flattened in
// (row, column, channel) order, channel fastest, with its (y, x) patch coordinate. A batch pads
// each sequence to a common length and marks the padding invalid.
#include <ATen/ATen.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "clipper/model/naflex_size.hpp"
#include "clipper/model/preprocess.hpp"

namespace clipper::model {

// A batch of patch sequences, as timm's NaFlexVit.forward takes them (its collator's dict).
struct NaflexBatch {
  at::Tensor patches;  // float [B, N, P*P*3]
  at::Tensor coord;    // int64 [B, N, 2]: (y, x) of each patch in its picture's grid
  at::Tensor valid;    // bool [B, N]: false for padding
};

// One picture's patches: [n, P*P*3], [n, 2], its grid (h, w) with h * w == n.
struct NaflexPatches {
  at::Tensor patches;
  at::Tensor coord;
  std::int64_t grid_h = 0, grid_w = 0;
};

// Resizes a float picture [3, H, W] (already normalized or not: resizing is linear) to
// naflex_image_size (antialiased bilinear or bicubic, as torchvision's resize of a tensor; an
// unchanged size is not resampled) and cuts it into patches (timm's ResizeToSequence then
// Patchify).
NaflexPatches naflex_patchify(const at::Tensor& image, std::int64_t patch, std::int64_t max_tokens,
                              Interpolation interpolation);

// Patches of pictures whose sides are already multiples of `patch`: [B, 3, H, W] -> a batch of
// H/patch * W/patch patches each, all valid (timm's batch_patchify).
NaflexBatch naflex_patchify_batch(const at::Tensor& images, std::int64_t patch);

// Pads the sequences to `seq_len` (0: the longest) with zero patches at coordinate (0, 0),
// marked invalid (timm's NaFlexCollator). A sequence longer than seq_len is an error.
NaflexBatch naflex_collate(const std::vector<NaflexPatches>& items, std::int64_t seq_len = 0);

// A batch of pictures each padded to N patches as the loader gives them: patches [B, N, P*P*3]
// (float, or uint8 before normalization), picture b's h * w patches first in row-major order
// (grids int64 [B, 2]: (h, w)), the rest padding. Coordinates and validity are derived on the
// patches' device. Errors name the picture whose grid does not fit N.
NaflexBatch naflex_batch_from_grids(const at::Tensor& patches, const at::Tensor& grids);

// How the pictures of a batch share sequence rows when packed (issue 28, item 3): first-fit
// decreasing by length into rows of `row_len` tokens; picture b takes tokens
// [offset[b], offset[b] + lengths[b]) of row row[b]. A picture longer than row_len is an error.
struct NaflexPacking {
  std::int64_t rows = 0, row_len = 0, tokens = 0;  // tokens: the pictures' tokens, all rows
  std::vector<std::int64_t> row, offset;
  // The share of the rows' slots that are padding (0 when nothing is packed).
  double padded_share() const {
    return rows == 0 ? 0.0
                     : 1.0 - static_cast<double>(tokens) / static_cast<double>(rows * row_len);
  }
};
NaflexPacking naflex_pack(const std::vector<std::int64_t>& lengths, std::int64_t row_len);

}  // namespace clipper::model
