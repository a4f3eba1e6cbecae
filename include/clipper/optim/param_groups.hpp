#pragma once
// Parameter groups as OpenCLIP makes them: no weight decay for tensors with fewer than 2 dims,
// biases, norms ("bn"/"ln" in the name) and logit_scale; weight decay for everything else. With
// layer-wise learning-rate decay or per-tower rates, each group also carries an lr scale and the
// parameters are grouped by (lr scale, weight decay), as OpenCLIP's layer_decay_param_groups.
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "clipper/config/config.hpp"

namespace torch::nn {
class Module;
}

namespace clipper::optim {

struct ParamGroup {
  std::vector<std::string> names;
  std::vector<at::Tensor> params;
  double weight_decay = 0.0;
  double lr_scale = 1.0;  // the group's learning rate is the schedule's times this
};

// True when OpenCLIP would exclude the parameter from weight decay.
bool excluded_from_decay(const std::string& name, const at::Tensor& param);
// {decayed group, undecayed group}; parameters that do not require grad (locked towers) are left
// out.
std::vector<ParamGroup> make_param_groups(const torch::nn::Module& model, double weight_decay);

// The learning-rate scale of every parameter of `model` (OpenCLIP names), in named_parameters()
// order. Layer groups, input to output, as OpenCLIP's layer_groups(): ViT [conv1, class and
// positional embeddings, ln_pre], each block (the last with ln_post), [proj]; ModifiedResNet
// [stem], layer1..4, [attnpool]; text [token and positional embeddings], each block (the last
// with ln_final), [text_projection]. A group d below its tower's last gets decay^d, times the
// tower's multiplier; parameters outside both towers (logit_scale, logit_bias) get 1. Throws
// InputError for a decay outside (0, 1] or a negative multiplier.
std::vector<std::pair<std::string, double>> lr_scales(const torch::nn::Module& model,
                                                      const config::OptimConfig& optim);
// Groups of the trainable parameters by (lr scale, weight decay), largest scale first, decayed
// before undecayed; with every scale 1 these are make_param_groups' two groups.
std::vector<ParamGroup> make_param_groups(const torch::nn::Module& model,
                                          const config::OptimConfig& optim);

}  // namespace clipper::optim
