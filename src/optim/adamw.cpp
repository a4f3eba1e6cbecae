#include "clipper/optim/adamw.hpp"

#include <ATen/ATen.h>

#include <unordered_map>

#include "clipper/core/error.hpp"

namespace clipper::optim {

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

void AdamW::step(double lr, const at::Tensor& found_inf) {
  at::NoGradGuard no_grad;
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
    // The fused kernel reads the step count; it does not advance it.
    if (advance.defined())
      at::_foreach_add_(steps, advance);
    else
      at::_foreach_add_(steps, 1);
    at::_fused_adamw_(params, grads, m, v, /*max_exp_avg_sqs=*/{}, steps, lr, options_.beta1,
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
