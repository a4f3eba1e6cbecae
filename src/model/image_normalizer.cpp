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
  auto x = images.to(device_, /*non_blocking=*/true).permute({0, 3, 1, 2}).to(at::kFloat);
  return x.div_(255.0f).sub_(mean_).div_(std_);
}

}  // namespace clipper::model
