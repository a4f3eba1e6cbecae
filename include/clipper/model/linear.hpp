#pragma once
// The towers' linear layer: torch::nn::Linear's parameters under its names ("weight" [out, in],
// "bias" [out]), so state dicts keep OpenCLIP's names, plus an optional low-rank adapter
// (model/lora.hpp) registered as the child "lora" when attached.
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

#include "clipper/model/lora.hpp"

namespace clipper::model {

class LinearImpl : public torch::nn::Module {
 public:
  // weight and bias start as torch::nn::Linear's: U(+-1/sqrt(in)) from the global generator.
  LinearImpl(std::int64_t in, std::int64_t out);
  // x W^T + b, plus the adapter's output when one is attached.
  at::Tensor forward(const at::Tensor& x);
  // Attaches an adapter (replacing one already there).
  void attach_lora(const LoraOptions& options, at::Generator gen);
  at::Tensor weight, bias;
  Lora lora{nullptr};
};
TORCH_MODULE(Linear);

}  // namespace clipper::model
