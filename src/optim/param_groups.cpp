#include "clipper/optim/param_groups.hpp"

#include <torch/nn/module.h>

namespace clipper::optim {

bool excluded_from_decay(const std::string& name, const at::Tensor& param) {
  return param.dim() < 2 || name.find("bn") != std::string::npos ||
         name.find("ln") != std::string::npos || name.find("bias") != std::string::npos ||
         name.find("logit_scale") != std::string::npos;
}

std::vector<ParamGroup> make_param_groups(const torch::nn::Module& model, double weight_decay) {
  ParamGroup decay, no_decay;
  decay.weight_decay = weight_decay;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (!item.value().requires_grad()) continue;
    ParamGroup& g = excluded_from_decay(item.key(), item.value()) ? no_decay : decay;
    g.names.push_back(item.key());
    g.params.push_back(item.value());
  }
  return {decay, no_decay};
}

}  // namespace clipper::optim
