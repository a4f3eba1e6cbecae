#pragma once
// Fills parameters from one CPU generator, whatever device they live on: same seed, same weights.
// Shared by the towers' init_parameters (private to src/model).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/modules/batchnorm.h>

#include <cmath>
#include <cstdint>
#include <functional>

#include "clipper/model/linear.hpp"
#include "clipper/model/transformer.hpp"

namespace clipper::model {

class Initializer {
 public:
  explicit Initializer(std::uint64_t seed) : gen_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}
  void normal(const at::Tensor& t, double std) {
    fill(t, [&](at::Tensor& c) { c.normal_(0.0, std, gen_); });
  }
  void uniform(const at::Tensor& t, double bound) {
    fill(t, [&](at::Tensor& c) { c.uniform_(-bound, bound, gen_); });
  }
  void constant(const at::Tensor& t, double v) {
    at::NoGradGuard g;
    t.fill_(v);
  }
  // PyTorch's default for Linear / Conv weights: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
  void torch_default(const at::Tensor& weight) {
    uniform(weight, 1.0 / std::sqrt(static_cast<double>(weight.numel() / weight.size(0))));
  }
  // PyTorch's default bias of a layer whose weight is `weight`: U(+-1/sqrt(fan_in)).
  void torch_default_bias(const at::Tensor& bias, const at::Tensor& weight) {
    uniform(bias, 1.0 / std::sqrt(static_cast<double>(weight.numel() / weight.size(0))));
  }
  void linear_default(const Linear& l) {
    torch_default(l->weight);
    if (l->bias.defined()) torch_default_bias(l->bias, l->weight);
  }
  // timm's ViT init for a Linear: N(0, 0.02) weights (timm truncates at +-2, which 0.02 never
  // reaches in practice), zero bias.
  void timm_linear(const Linear& l) {
    normal(l->weight, 0.02);
    if (l->bias.defined()) constant(l->bias, 0.0);
  }
  void layer_norm(const LayerNorm& ln) {
    constant(ln->weight, 1.0);
    constant(ln->bias, 0.0);
  }
  void batch_norm(const torch::nn::BatchNorm2d& bn, double weight = 1.0) {
    constant(bn->weight, weight);
    constant(bn->bias, 0.0);
    constant(bn->running_mean, 0.0);
    constant(bn->running_var, 1.0);
    constant(bn->num_batches_tracked, 0.0);
  }

 private:
  void fill(const at::Tensor& t, const std::function<void(at::Tensor&)>& f) {
    at::NoGradGuard g;
    at::Tensor c = at::empty(t.sizes(), at::TensorOptions().dtype(at::kFloat));
    f(c);
    t.copy_(c);
  }
  at::Generator gen_;
};

}  // namespace clipper::model
