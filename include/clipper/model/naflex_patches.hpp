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

// The size (height, width) a picture of `height` x `width` pixels is resized to under a budget
// of `max_tokens` patches of `patch` pixels: timm's get_image_size_for_seq (its binary search
// for the largest scale whose patch-rounded size fits, each side at least one patch). Throws
// InputError for a budget below one patch or a picture timm's search cannot scale.
std::pair<std::int64_t, std::int64_t> naflex_image_size(std::int64_t height, std::int64_t width,
                                                        std::int64_t patch,
                                                        std::int64_t max_tokens);

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

}  // namespace clipper::model
