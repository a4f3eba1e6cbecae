#include "clipper/model/image_normalizer.hpp"

#include <ATen/ATen.h>

namespace clipper::model {

ImageNormalizer::ImageNormalizer(const ModelSpec& spec, at::Device device) : device_(device) {
  const auto o = at::TensorOptions().dtype(at::kFloat).device(device);
  mean_ = at::tensor(std::vector<float>(spec.mean.begin(), spec.mean.end()), o).view({1, 3, 1, 1});
  std_ = at::tensor(std::vector<float>(spec.std.begin(), spec.std.end()), o).view({1, 3, 1, 1});
}

at::Tensor ImageNormalizer::operator()(const at::Tensor& images) const {
  if (images.scalar_type() != at::kByte) return images.to(device_, /*non_blocking=*/true);
  if (images.dim() == 3) {
    // NaFlex patches [B, N, P*P*3], channel fastest: value i is channel i % 3.
    const auto b = images.size(0), n = images.size(1), d = images.size(2);
    auto x = images.to(device_, /*non_blocking=*/true).to(at::kFloat).view({b, n, d / 3, 3});
    return x.div_(255.0f).sub_(mean_.view({3})).div_(std_.view({3})).view({b, n, d});
  }
  auto x = images.to(device_, /*non_blocking=*/true).permute({0, 3, 1, 2}).to(at::kFloat);
  return x.div_(255.0f).sub_(mean_).div_(std_);
}

}  // namespace clipper::model
