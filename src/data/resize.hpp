#pragma once
// Resize of interleaved 8-bit pixels with PIL's filters (bicubic a = -0.5, or bilinear;
// antialiased when shrinking), the ones OpenCLIP's transforms use through torchvision on PIL
// images. It runs LibTorch's vectorised uint8 kernels (`_upsample_bicubic2d_aa`,
// `_upsample_bilinear2d_aa`) on the calling thread only.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "clipper/model/preprocess.hpp"

namespace clipper::data {

// Resizes the `w` x `h` region at `src` (rows `stride` bytes apart, `channels` bytes per pixel,
// 1 to 4) to `out_w` x `out_h` into `dst` (tightly packed). `scratch` holds a packed copy when the
// region is not packed already.
void resize_u8(const std::uint8_t* src, int w, int h, std::size_t stride, int channels,
               std::uint8_t* dst, int out_w, int out_h, model::Interpolation filter,
               std::vector<std::uint8_t>* scratch);

// resize_u8 of 3-channel pixels with the bicubic filter.
inline void resize_bicubic_rgb8(const std::uint8_t* src, int w, int h, std::size_t stride,
                                std::uint8_t* dst, int out_w, int out_h,
                                std::vector<std::uint8_t>* scratch) {
  resize_u8(src, w, h, stride, 3, dst, out_w, out_h, model::Interpolation::bicubic, scratch);
}

}  // namespace clipper::data
