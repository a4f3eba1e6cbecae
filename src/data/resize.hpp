#pragma once
// Bicubic resize of 8-bit RGB pixels with PIL's filter (a = -0.5, antialiased when shrinking), the
// one OpenCLIP's transforms use through torchvision on PIL images. It runs LibTorch's
// vectorised uint8 kernel (`_upsample_bicubic2d_aa`) on the calling thread only.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace clipper::data {

// Resizes the `w` x `h` region at `src` (rows `stride` bytes apart, 3 bytes per pixel) to
// `out_w` x `out_h` into `dst` (tightly packed). `scratch` holds a packed copy when the region is
// not packed already.
void resize_bicubic_rgb8(const std::uint8_t* src, int w, int h, std::size_t stride,
                         std::uint8_t* dst, int out_w, int out_h,
                         std::vector<std::uint8_t>* scratch);

}  // namespace clipper::data
