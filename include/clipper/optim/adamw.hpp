#pragma once
// AdamW over parameter groups through at::_fused_adamw_ (one fused kernel per group, on CUDA and on
// CPU), with its state exposed as named tensors for checkpoints. `fused = false` runs the same
// update as PyTorch's multi-tensor (foreach) AdamW instead, for comparisons: it reads the step
// counts and found_inf on the host, as that implementation does.
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "clipper/optim/param_groups.hpp"

namespace clipper::config {
struct OptimConfig;
}

namespace clipper::optim {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.98;
  double eps = 1e-6;
  bool fused = true;
};

// The run's AdamW settings: optim.beta1/beta2/eps/fused, where beta2 and eps left unset take
// OpenCLIP's defaults for the model's family (config::adamw_defaults of its name).
AdamWOptions adamw_options(const config::OptimConfig& optim, const std::string& model_name);

class AdamW {
 public:
  AdamW(std::vector<ParamGroup> groups, AdamWOptions options);
  // One update at learning rate `lr` (each group's: lr * its lr_scale); parameters without a
  // gradient are left alone. found_inf (optional, a float32 scalar on the parameters' device, 0 or
  // 1): when 1, nothing changes, step counts included, decided on the device without a host read.
  void step(double lr, const at::Tensor& found_inf = {});
  void zero_grad();
  const std::vector<ParamGroup>& groups() const { return groups_; }
  // "<param>.exp_avg", "<param>.exp_avg_sq", "<param>.step" for every parameter.
  std::vector<std::pair<std::string, at::Tensor>> state() const;
  // Restores state() output; every parameter's entries must be present with matching shapes.
  void load_state(const std::vector<std::pair<std::string, at::Tensor>>& state);

 private:
  void step_foreach(double lr, double weight_decay, std::vector<at::Tensor>& params,
                    std::vector<at::Tensor>& grads, std::vector<at::Tensor>& m,
                    std::vector<at::Tensor>& v, std::vector<at::Tensor>& steps) const;
  struct Slot {
    at::Tensor exp_avg, exp_avg_sq, step;
  };
  std::vector<ParamGroup> groups_;
  std::vector<std::vector<Slot>> slots_;  // per group, per parameter
  AdamWOptions options_;
};

}  // namespace clipper::optim
