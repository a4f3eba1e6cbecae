#pragma once
// SILC's local views (SigLIP 2 sec. 2.3), cut on the device from the batch the loader already
// made: each picture's global view (the loader's RandomResizedCrop) gives V random crops of
// scale [scale_min, scale_max] of its area and aspect ratio in [ratio_min, ratio_max]
// (torchvision's RandomResizedCrop.get_params: 10 tries, then the centre crop), each resized
// (bilinear) to `size`. No second pass of the loader and no second decode. SILC cuts its local
// crops (scale 0.05-0.4) from the original image and shows them at 96 px; clipper cuts them from
// the global view and shows them at the model's input size (its positional embedding is fixed).
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace clipper::train {

struct LocalViewOptions {
  std::int64_t views = 8;  // SILC's 8 local views
  double scale_min = 0.05, scale_max = 0.4;
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;
  std::int64_t size = 0;  // 0: the global view's side
};

struct LocalViews {
  at::Tensor images;  // [V * B, C, size, size], view-major: row v * B + b is picture b's view v
  at::Tensor boxes;   // int64 [V, B, 4]: (x, y, w, h) of each crop in the global view's pixels
};

// images: [B, C, H, W] (float, any device); the boxes are drawn on the host from `gen`.
LocalViews make_local_views(const at::Tensor& images, const LocalViewOptions& options,
                            at::Generator gen);

}  // namespace clipper::train
