#include "clipper/model/linear.hpp"

#include <torch/nn/init.h>

#include <cmath>

namespace clipper::model {

LinearImpl::LinearImpl(std::int64_t in, std::int64_t out) {
  weight = register_parameter("weight", at::empty({out, in}));
  bias = register_parameter("bias", at::empty({out}));
  // torch::nn::Linear's reset_parameters, draw for draw.
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  torch::nn::init::uniform_(bias, -bound, bound);
}

at::Tensor LinearImpl::forward(const at::Tensor& x) {
  auto y = at::linear(x, weight, bias);
  return lora ? y + lora->forward(x) : y;
}

void LinearImpl::attach_lora(const LoraOptions& options, at::Generator gen) {
  if (lora) unregister_module("lora");
  lora = register_module("lora", Lora(weight.size(1), weight.size(0), options, std::move(gen)));
  lora->to(weight.device());
}

}  // namespace clipper::model
