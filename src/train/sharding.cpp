#include "clipper/train/sharding.hpp"

#include <ATen/ATen.h>

#include "clipper/core/error.hpp"

namespace clipper::train {

at::Tensor ParameterSharding::norm_term(const at::Tensor& norms) const {
  return norms.to(at::kDouble).square().sum();
}

at::Tensor ParameterSharding::global_norm(const at::Tensor& summed) const {
  return summed.sqrt();
}

std::unique_ptr<ParameterSharding> make_sharding(int zero, ShardingSetup setup) {
  switch (zero) {
    case 0:
      return make_replicated(std::move(setup));
    case 1:
      return make_zero1(std::move(setup));
    case 2:
      return make_zero2(std::move(setup));
    case 3:
      return make_full(std::move(setup));
    default:
      throw core::InputError("dist.zero must be 0, 1, 2 or 3, got " + std::to_string(zero));
  }
}

ShardingCounters ParameterSharding::counters() const {
  ShardingCounters c;
  c.peak_parameter_bytes = c.resident_parameter_bytes = peak_parameter_bytes();
  c.peak_gradient_bytes = peak_gradient_bytes();
  return c;
}

std::int64_t bytes_of(const std::vector<at::Tensor>& tensors) {
  std::int64_t n = 0;
  for (const auto& t : tensors) n += static_cast<std::int64_t>(t.numel() * t.element_size());
  return n;
}

}  // namespace clipper::train
