#include "clipper/train/siglip2_views.hpp"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <string>
#include <vector>

#include "clipper/core/error.hpp"

namespace clipper::train {

namespace {

struct Box {
  std::int64_t x, y, w, h;
};

// torchvision's RandomResizedCrop.get_params on a w x h picture, uniform draws from `gen`.
Box random_crop(std::int64_t w, std::int64_t h, const LocalViewOptions& o,
                at::CPUGeneratorImpl& gen) {
  auto uniform = [&](double lo, double hi) {
    return lo + (hi - lo) * (static_cast<double>(gen.random64() >> 11) * 0x1.0p-53);
  };
  const double area = static_cast<double>(w * h);
  const double log_lo = std::log(o.ratio_min), log_hi = std::log(o.ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * uniform(o.scale_min, o.scale_max);
    const double ratio = std::exp(uniform(log_lo, log_hi));
    const auto cw = static_cast<std::int64_t>(std::lround(std::sqrt(target * ratio)));
    const auto ch = static_cast<std::int64_t>(std::lround(std::sqrt(target / ratio)));
    if (cw > 0 && ch > 0 && cw <= w && ch <= h) {
      const auto x = static_cast<std::int64_t>(uniform(0.0, static_cast<double>(w - cw + 1)));
      const auto y = static_cast<std::int64_t>(uniform(0.0, static_cast<double>(h - ch + 1)));
      return {std::min(x, w - cw), std::min(y, h - ch), cw, ch};
    }
  }
  // The centre crop with the ratio clamped into the range.
  const double in_ratio = static_cast<double>(w) / static_cast<double>(h);
  std::int64_t cw = w, ch = h;
  if (in_ratio < o.ratio_min)
    ch = static_cast<std::int64_t>(std::lround(static_cast<double>(w) / o.ratio_min));
  else if (in_ratio > o.ratio_max)
    cw = static_cast<std::int64_t>(std::lround(static_cast<double>(h) * o.ratio_max));
  return {(w - cw) / 2, (h - ch) / 2, cw, ch};
}

void check(const at::Tensor& images, const LocalViewOptions& o) {
  core::require(o.views >= 1,
                "local views: views must be at least 1, got " + std::to_string(o.views));
  core::require(0.0 < o.scale_min && o.scale_min <= o.scale_max && o.scale_max <= 1.0,
                "local views: need 0 < scale_min <= scale_max <= 1, got " +
                    std::to_string(o.scale_min) + " and " + std::to_string(o.scale_max));
  core::require(0.0 < o.ratio_min && o.ratio_min <= o.ratio_max,
                "local views: need 0 < ratio_min <= ratio_max");
  core::require(o.size >= 0, "local views: size must be 0 (the input's) or positive");
  TORCH_CHECK(images.dim() == 4, "local views: images [B, C, H, W] expected, got ", images.sizes());
}

}  // namespace

LocalViews make_local_views(const at::Tensor& images, const LocalViewOptions& o,
                            at::Generator gen) {
  check(images, o);
  const auto b = images.size(0), h = images.size(2), w = images.size(3);
  const auto size = o.size > 0 ? o.size : h;
  LocalViews out;
  out.boxes = at::empty({o.views, b, 4}, at::TensorOptions().dtype(at::kLong));
  auto acc = out.boxes.accessor<std::int64_t, 3>();
  std::vector<at::Tensor> crops;
  crops.reserve(static_cast<std::size_t>(o.views * b));
  {
    auto* cpu = at::check_generator<at::CPUGeneratorImpl>(gen);
    std::lock_guard<std::mutex> lock(gen.mutex());
    for (std::int64_t v = 0; v < o.views; ++v)
      for (std::int64_t i = 0; i < b; ++i) {
        const Box box = random_crop(w, h, o, *cpu);
        acc[v][i][0] = box.x;
        acc[v][i][1] = box.y;
        acc[v][i][2] = box.w;
        acc[v][i][3] = box.h;
        crops.push_back(at::upsample_bilinear2d(
            images.narrow(0, i, 1).narrow(2, box.y, box.h).narrow(3, box.x, box.w), {size, size},
            /*align_corners=*/false));
      }
  }
  out.images = at::cat(crops);
  return out;
}

}  // namespace clipper::train
