#include "resize.hpp"
#include <ATen/core/Tensor.h>
#include <ATen/ops/_upsample_bicubic2d_aa.h>
#include <ATen/ops/_upsample_bilinear2d_aa.h>
#include <ATen/ops/from_blob.h>
#include <c10/core/InferenceMode.h>
#include <cstring>

namespace clipper::data {

void resize_u8(const std::uint8_t* src, int w, int h, std::size_t stride, int channels,
               std::uint8_t* dst, int out_w, int out_h, model::Interpolation filter,
               std::vector<std::uint8_t>* scratch) {
  const std::int64_t c = channels;
  const std::size_t row = static_cast<std::size_t>(w) * channels;
  if (stride != row) {
    // A packed channels-last input keeps the kernel on its single-threaded fast path (a strided
    // view would be copied with intra-op threads first).
    scratch->resize(row * static_cast<std::size_t>(h));
    for (int y = 0; y < h; ++y) std::memcpy(scratch->data() + row * y, src + stride * y, row);
    src = scratch->data();
  }
  c10::InferenceMode no_autograd;
  const auto u8 = at::TensorOptions().dtype(at::kByte);
  const at::Tensor in =
      at::from_blob(const_cast<std::uint8_t*>(src), {1, c, h, w},
                    {static_cast<std::int64_t>(row) * h, 1, static_cast<std::int64_t>(row), c}, u8);
  at::Tensor out =
      at::from_blob(dst, {1, c, out_h, out_w}, {c * out_w * out_h, 1, c * out_w, c}, u8);
  if (filter == model::Interpolation::bilinear)
    at::_upsample_bilinear2d_aa_out(out, in, {out_h, out_w}, /*align_corners=*/false);
  else
    at::_upsample_bicubic2d_aa_out(out, in, {out_h, out_w}, /*align_corners=*/false);
}

}  // namespace clipper::data
