#include "clipper/optim/adamw.hpp"

#include <ATen/ATen.h>

#include <cmath>
#include <unordered_map>

#include "clipper/config/loader.hpp"
#include "clipper/core/error.hpp"

namespace clipper::optim {

AdamWOptions adamw_options(const config::OptimConfig& o, const std::string& model_name) {
  const auto family = config::adamw_defaults(model_name);
  return {o.beta1, o.beta2 < 0 ? family.beta2 : o.beta2, o.eps < 0 ? family.eps : o.eps, o.fused};
}

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions options)
    : groups_(std::move(groups)), options_(options) {
  for (const auto& g : groups_) {
    std::vector<Slot> s;
    for (const auto& p : g.params) {
      const auto o = p.options().requires_grad(false);
      s.push_back({at::zeros_like(p, o.memory_format(at::MemoryFormat::Preserve)),
                   at::zeros_like(p, o.memory_format(at::MemoryFormat::Preserve)),
                   at::zeros({}, o.dtype(at::kFloat))});
    }
    slots_.push_back(std::move(s));
  }
}

// PyTorch's _multi_tensor_adamw (not capturable): decoupled decay, moments, bias corrections from
// the host step counts, one addcdiv.
void AdamW::step_foreach(double lr, double weight_decay, std::vector<at::Tensor>& params,
                         std::vector<at::Tensor>& grads, std::vector<at::Tensor>& m,
                         std::vector<at::Tensor>& v, std::vector<at::Tensor>& steps) const {
  at::_foreach_add_(steps, 1);
  std::vector<at::Scalar> step_size, bc2_sqrt;
  for (const auto& s : steps) {
    const double t = s.item<double>();
    step_size.emplace_back(-lr / (1.0 - std::pow(options_.beta1, t)));
    bc2_sqrt.emplace_back(std::sqrt(1.0 - std::pow(options_.beta2, t)));
  }
  if (weight_decay != 0.0) at::_foreach_mul_(params, 1.0 - lr * weight_decay);
  at::_foreach_lerp_(m, grads, 1.0 - options_.beta1);
  at::_foreach_mul_(v, options_.beta2);
  at::_foreach_addcmul_(v, grads, grads, 1.0 - options_.beta2);
  auto denom = at::_foreach_sqrt(v);
  at::_foreach_div_(denom, bc2_sqrt);
  at::_foreach_add_(denom, options_.eps);
  at::_foreach_addcdiv_(params, m, denom, step_size);
}

void AdamW::step(double lr, const at::Tensor& found_inf) {
  at::NoGradGuard no_grad;
  // The foreach path decides on the host, as PyTorch's GradScaler does for unfused optimizers.
  if (!options_.fused && found_inf.defined() && found_inf.item<float>() != 0.0f) return;
  const at::Tensor advance = found_inf.defined() ? 1.0 - found_inf : at::Tensor();
  for (std::size_t gi = 0; gi < groups_.size(); ++gi) {
    std::vector<at::Tensor> params, grads, m, v, steps;
    for (std::size_t i = 0; i < groups_[gi].params.size(); ++i) {
      const auto& p = groups_[gi].params[i];
      if (!p.grad().defined()) continue;
      params.push_back(p);
      grads.push_back(p.grad());
      m.push_back(slots_[gi][i].exp_avg);
      v.push_back(slots_[gi][i].exp_avg_sq);
      steps.push_back(slots_[gi][i].step);
    }
    if (params.empty()) continue;
    const double group_lr = lr * groups_[gi].lr_scale;
    if (!options_.fused) {
      step_foreach(group_lr, groups_[gi].weight_decay, params, grads, m, v, steps);
      continue;
    }
    // The fused kernel reads the step count; it does not advance it.
    if (advance.defined())
      at::_foreach_add_(steps, advance);
    else
      at::_foreach_add_(steps, 1);
    at::_fused_adamw_(params, grads, m, v, /*max_exp_avg_sqs=*/{}, steps, group_lr, options_.beta1,
                      options_.beta2, groups_[gi].weight_decay, options_.eps, /*amsgrad=*/false,
                      /*maximize=*/false, /*grad_scale=*/std::nullopt,
                      found_inf.defined() ? std::optional<at::Tensor>(found_inf) : std::nullopt);
  }
}

void AdamW::zero_grad() {
  for (auto& g : groups_)
    for (auto& p : g.params)
      if (p.grad().defined()) p.mutable_grad() = at::Tensor();
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (std::size_t gi = 0; gi < groups_.size(); ++gi)
    for (std::size_t i = 0; i < groups_[gi].params.size(); ++i) {
      const auto& n = groups_[gi].names[i];
      out.emplace_back(n + ".exp_avg", slots_[gi][i].exp_avg);
      out.emplace_back(n + ".exp_avg_sq", slots_[gi][i].exp_avg_sq);
      out.emplace_back(n + ".step", slots_[gi][i].step);
    }
  return out;
}

void AdamW::load_state(const std::vector<std::pair<std::string, at::Tensor>>& state) {
  std::unordered_map<std::string, const at::Tensor*> by_name;
  for (const auto& [n, t] : state) by_name[n] = &t;
  at::NoGradGuard no_grad;
  for (std::size_t gi = 0; gi < groups_.size(); ++gi)
    for (std::size_t i = 0; i < groups_[gi].params.size(); ++i) {
      Slot& s = slots_[gi][i];
      const auto& n = groups_[gi].names[i];
      for (auto [suffix, dst] : {std::pair<const char*, at::Tensor*>{".exp_avg", &s.exp_avg},
                                 {".exp_avg_sq", &s.exp_avg_sq},
                                 {".step", &s.step}}) {
        auto it = by_name.find(n + suffix);
        if (it == by_name.end())
          throw core::InputError("optimizer state has no entry '" + n + suffix + "'");
        if (it->second->sizes() != dst->sizes())
          throw core::InputError("optimizer state '" + n + suffix + "' has shape " +
                                 c10::str(it->second->sizes()) + ", expected " +
                                 c10::str(dst->sizes()));
        dst->copy_(*it->second);
      }
    }
}

}  // namespace clipper::optim
