#pragma once
// Loader batches to model input: uint8 [B,H,W,3] (any device) -> float [B,3,H,W] on the model's
// device, normalized with the architecture's mean and std. Float input is taken as already
// normalized and only moved. NaFlex patches, uint8 [B, N, P*P*3] with the channel fastest, become
// float [B, N, P*P*3] alike. Used by the training step, evaluation and `clipper embed`.
#include <ATen/core/Tensor.h>

#include "clipper/model/model_spec.hpp"

namespace clipper::model {

class ImageNormalizer {
 public:
  ImageNormalizer(const ModelSpec& spec, at::Device device);
  at::Tensor operator()(const at::Tensor& images) const;

 private:
  at::Device device_;
  at::Tensor mean_, std_;  // [1,3,1,1] on device_
};

}  // namespace clipper::model
