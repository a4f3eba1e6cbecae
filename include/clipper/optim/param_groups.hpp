#pragma once
// Parameter groups as OpenCLIP makes them: no weight decay for tensors with fewer than 2 dims,
// biases, norms ("bn"/"ln" in the name) and logit_scale; weight decay for everything else.
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace torch::nn {
class Module;
}

namespace clipper::optim {

struct ParamGroup {
  std::vector<std::string> names;
  std::vector<at::Tensor> params;
  double weight_decay = 0.0;
};

// True when OpenCLIP would exclude the parameter from weight decay.
bool excluded_from_decay(const std::string& name, const at::Tensor& param);
// {decayed group, undecayed group}; parameters that do not require grad (locked towers) are left
// out.
std::vector<ParamGroup> make_param_groups(const torch::nn::Module& model, double weight_decay);

}  // namespace clipper::optim
