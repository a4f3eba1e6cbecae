#include "clipper/train/ema.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "clipper/core/error.hpp"

namespace clipper::train {

double ema_decay_at(const EmaOptions& o, std::int64_t t) {
  if (o.warmup_power <= 0) return o.decay;
  const double warm = 1.0 - std::pow(1.0 + static_cast<double>(t), -o.warmup_power);
  return std::min(o.decay, warm);
}

WeightEma::WeightEma(model::ClipImpl& model, EmaOptions options) : options_(options) {
  at::NoGradGuard no_grad;
  for (const auto& p : model.named_parameters(/*recurse=*/true)) {
    if (!p.value().requires_grad()) continue;
    names_.push_back(p.key());
    live_.push_back(p.value());
  }
  for (const auto& b : model.named_buffers(/*recurse=*/true)) {
    if (!b.value().is_floating_point()) continue;
    names_.push_back(b.key());
    live_.push_back(b.value());
  }
  // clone() keeps each tensor's strides (channels-last weights too), so the lerp stays fused.
  for (const auto& t : live_) ema_.push_back(t.detach().clone());
}

void WeightEma::update() {
  if (ema_.empty()) return;
  at::NoGradGuard no_grad;
  const double weight = 1.0 - ema_decay_at(options_, updates_++);
  std::vector<at::Tensor> live;
  live.reserve(live_.size());
  for (const auto& t : live_) live.push_back(t.detach());
  at::_foreach_lerp_(ema_, live, weight);
}

std::vector<std::pair<std::string, at::Tensor>> WeightEma::named() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (std::size_t i = 0; i < names_.size(); ++i) out.emplace_back(names_[i], ema_[i]);
  return out;
}

void WeightEma::load(const std::vector<std::pair<std::string, at::Tensor>>& saved,
                     const std::string& origin) {
  std::map<std::string, at::Tensor> by_name(saved.begin(), saved.end());
  std::vector<std::string> missing, unexpected;
  for (const auto& n : names_)
    if (!by_name.count(n)) missing.push_back(n);
  for (const auto& [n, t] : by_name)
    if (std::find(names_.begin(), names_.end(), n) == names_.end()) unexpected.push_back(n);
  if (!missing.empty() || !unexpected.empty())
    throw core::InputError(origin + ": the weight average does not track this run's tensors (" +
                           std::to_string(missing.size()) + " missing, first '" +
                           (missing.empty() ? "" : missing[0]) + "'; " +
                           std::to_string(unexpected.size()) + " unexpected, first '" +
                           (unexpected.empty() ? "" : unexpected[0]) +
                           "'): were other parameters locked (model.lock_*) when it was saved?");
  at::NoGradGuard no_grad;
  for (std::size_t i = 0; i < names_.size(); ++i) {
    const at::Tensor& t = by_name.at(names_[i]);
    if (t.sizes() != ema_[i].sizes())
      throw core::InputError(origin + ": weight average '" + names_[i] + "' has shape " +
                             c10::str(t.sizes()) + ", the model " + c10::str(ema_[i].sizes()));
    ema_[i].copy_(t);
  }
}

void WeightEma::reset_to_model() {
  at::NoGradGuard no_grad;
  for (std::size_t i = 0; i < live_.size(); ++i) ema_[i].copy_(live_[i].detach());
  updates_ = 0;
}

void WeightEma::swap_with_model() {
  at::NoGradGuard no_grad;
  for (std::size_t i = 0; i < live_.size(); ++i) {
    at::Tensor live = live_[i].detach();
    const at::Tensor kept = live.clone();
    live.copy_(ema_[i]);
    ema_[i].copy_(kept);
  }
}

}  // namespace clipper::train
