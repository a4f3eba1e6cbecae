#pragma once
// Parameter groups as OpenCLIP makes them. Which parameters skip weight decay is optim.no_decay's
// rule (config::NoDecay): open_clip 3.3.0's main.py (openclip3: tensors with fewer than 2 dims,
// biases, norms ("bn"/"ln" in the name) and logit_scale) or open_clip main's optim.py (modern:
// 1-dim tensors plus CLIP's no_weight_decay() names, positional_embedding,
// visual.positional_embedding and visual.class_embedding); the rest is decayed. With
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

// The rule a run uses: optim.no_decay, auto resolved (modern with layer decay, else openclip3).
config::NoDecay no_decay_rule(const config::OptimConfig& optim);
// True when `rule` (openclip3 or modern; auto reads as openclip3) excludes the parameter from
// weight decay.
bool excluded_from_decay(const std::string& name, const at::Tensor& param,
                         config::NoDecay rule = config::NoDecay::openclip3);
// {decayed group, undecayed group}; parameters that do not require grad (locked towers) are left
// out.
std::vector<ParamGroup> make_param_groups(const torch::nn::Module& model, double weight_decay,
                                          config::NoDecay rule = config::NoDecay::openclip3);

// The learning-rate scale of every parameter of `model` (OpenCLIP names), in named_parameters()
// order. Layer groups, input to output, as OpenCLIP's layer_groups(): ViT [conv1, class and
// positional embeddings, ln_pre], each block (the last with ln_post), [proj]; ModifiedResNet
// [stem], layer1..4, [attnpool]; a timm trunk (SigLIP) [patch_embed, pos_embed], each block,
// [norm], [attn_pool]; text (top level or under text.) [token and positional embeddings], each
// block (the last with ln_final), [text_projection]. A group d below its tower's last gets decay^d, times the
// tower's multiplier; parameters outside both towers (logit_scale, logit_bias) get 1. Throws
// InputError for a decay outside (0, 1] or a negative multiplier.
std::vector<std::pair<std::string, double>> lr_scales(const torch::nn::Module& model,
                                                      const config::OptimConfig& optim);
// Groups of the trainable parameters by (lr scale, weight decay), largest scale first, decayed
// before undecayed; with every scale 1 these are make_param_groups' two groups.
std::vector<ParamGroup> make_param_groups(const torch::nn::Module& model,
                                          const config::OptimConfig& optim);

}  // namespace clipper::optim
