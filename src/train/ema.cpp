#include "clipper/train/ema.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "clipper/core/error.hpp"

namespace clipper::train {

double ema_decay_at(const EmaOptions& o, std::int64_t t) {
  if (o.warmup_power <= 0) return o.decay;
  const double warm = 1.0 - std::pow(1.0 + static_cast<double>(t), -o.warmup_power);
  return std::min(o.decay, warm);
}

WeightEma::WeightEma(model::ClipImpl& model, EmaOptions options,
                     std::optional<ShardedParameters> sharded)
    : options_(options), sharded_(std::move(sharded)) {
  at::NoGradGuard no_grad;
  for (const auto& p : model.named_parameters(/*recurse=*/true)) {
    if (!p.value().requires_grad()) continue;
    if (sharded_) {
      sharded_shapes_.push_back(p.value().sizes().vec());
      continue;
    }
    names_.push_back(p.key());
    live_.push_back(p.value());
  }
  if (sharded_)
    core::require(sharded_shapes_.size() == sharded_->names.size(),
                  "WeightEma: the sharded parameters are not the model's trainable ones");
  for (const auto& b : model.named_buffers(/*recurse=*/true)) {
    if (!b.value().is_floating_point()) continue;
    names_.push_back(b.key());
    live_.push_back(b.value());
  }
  // clone() keeps each tensor's strides (channels-last weights too), so the lerp stays fused.
  for (const auto& t : live_) ema_.push_back(t.detach().clone());
  if (sharded_)
    for (const auto& t : sharded_->current()) ema_shards_.push_back(t.detach().clone());
}

std::vector<at::Tensor> WeightEma::live() const {
  std::vector<at::Tensor> out;
  for (const auto& t : live_) out.push_back(t.detach());
  if (sharded_)
    for (const auto& t : sharded_->current()) out.push_back(t.detach());
  return out;
}

std::vector<at::Tensor> WeightEma::averages() const {
  std::vector<at::Tensor> out = ema_;
  out.insert(out.end(), ema_shards_.begin(), ema_shards_.end());
  return out;
}

void WeightEma::update() {
  std::vector<at::Tensor> ema = averages();
  if (ema.empty()) return;
  at::NoGradGuard no_grad;
  const double weight = 1.0 - ema_decay_at(options_, updates_++);
  at::_foreach_lerp_(ema, live(), weight);
}

std::vector<std::pair<std::string, at::Tensor>> WeightEma::named() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (std::size_t i = 0; i < names_.size(); ++i) out.emplace_back(names_[i], ema_[i]);
  return out;
}

std::vector<std::string> WeightEma::sharded_names() const {
  return sharded_ ? sharded_->names : std::vector<std::string>{};
}

std::optional<optim::FlatShards> WeightEma::shards() const {
  if (!sharded_) return std::nullopt;
  return optim::to_flat_shards(sharded_->layout, sharded_->rank, sharded_->names, ema_shards_,
                               "ema");
}

std::int64_t WeightEma::parameter_bytes() const {
  std::int64_t n = 0;
  if (sharded_) {
    for (const auto& t : ema_shards_) n += static_cast<std::int64_t>(t.nbytes());
    return n;
  }
  for (std::size_t i = 0; i < live_.size(); ++i)
    if (live_[i].requires_grad()) n += static_cast<std::int64_t>(ema_[i].nbytes());
  return n;
}

namespace {

// "N missing, first 'a'; M unexpected, first 'b'" of `have` against `want`, or "" if equal.
std::string difference(const std::set<std::string>& want, const std::set<std::string>& have) {
  std::vector<std::string> missing, unexpected;
  for (const auto& n : want)
    if (!have.count(n)) missing.push_back(n);
  for (const auto& n : have)
    if (!want.count(n)) unexpected.push_back(n);
  if (missing.empty() && unexpected.empty()) return "";
  return std::to_string(missing.size()) + " missing, first '" +
         (missing.empty() ? "" : missing[0]) + "'; " + std::to_string(unexpected.size()) +
         " unexpected, first '" + (unexpected.empty() ? "" : unexpected[0]) + "'";
}

}  // namespace

void WeightEma::load(const std::vector<std::pair<std::string, at::Tensor>>& saved,
                     const std::vector<std::string>& elsewhere, const std::string& origin) {
  std::set<std::string> want(names_.begin(), names_.end()),
      have(elsewhere.begin(), elsewhere.end());
  for (const auto& n : sharded_names()) want.insert(n);
  for (const auto& [n, t] : saved)
    if (!have.insert(n).second)
      throw core::InputError(origin + ": the weight average holds '" + n + "' twice");
  const std::string diff = difference(want, have);
  if (!diff.empty())
    throw core::InputError(origin + ": the weight average does not track this run's tensors (" +
                           diff +
                           "): were other parameters locked (model.lock_*) when it was saved?");
  std::map<std::string, std::vector<std::int64_t>> shape;
  for (std::size_t i = 0; i < names_.size(); ++i) shape[names_[i]] = ema_[i].sizes().vec();
  for (std::size_t i = 0; i < sharded_shapes_.size(); ++i)
    shape[sharded_->names[i]] = sharded_shapes_[i];
  optim::NamedTensors to_cut;
  at::NoGradGuard no_grad;
  for (const auto& [name, t] : saved) {
    if (t.sizes().vec() != shape.at(name))
      throw core::InputError(origin + ": weight average '" + name + "' has shape " +
                             c10::str(t.sizes()) + ", the model " +
                             c10::str(at::IntArrayRef(shape.at(name))));
    const auto it = std::find(names_.begin(), names_.end(), name);
    if (it != names_.end())
      ema_[it - names_.begin()].copy_(t);
    else
      to_cut.emplace_back(name, t);
  }
  if (!to_cut.empty()) load_shards(optim::whole_as_saved_flat_shards(to_cut, "ema", origin), {});
}

void WeightEma::load_shards(const optim::SavedFlatShards& saved,
                            const std::vector<std::string>& names) {
  at::NoGradGuard no_grad;
  if (sharded_) {
    optim::load_shards_from_flat_shards(saved, "ema", sharded_->layout, sharded_->rank,
                                        sharded_->names, ema_shards_);
    return;
  }
  std::vector<at::Tensor> whole;
  for (const auto& n : names) {
    const auto it = std::find(names_.begin(), names_.end(), n);
    if (it == names_.end())
      throw core::InputError("checkpoint '" + saved.where +
                             "': the weight average's shards hold '" + n +
                             "', which this run does not average");
    whole.push_back(ema_[it - names_.begin()]);
  }
  optim::load_whole_from_flat_shards(saved, "ema", names, whole);
}

void WeightEma::reset_to_model() {
  at::NoGradGuard no_grad;
  const auto live_now = live();
  auto ema = averages();
  for (std::size_t i = 0; i < ema.size(); ++i) ema[i].copy_(live_now[i]);
  updates_ = 0;
}

void WeightEma::swap_with_model() {
  at::NoGradGuard no_grad;
  const auto live_now = live();
  auto ema = averages();
  for (std::size_t i = 0; i < ema.size(); ++i) {
    const at::Tensor kept = live_now[i].clone();
    live_now[i].copy_(ema[i]);
    ema[i].copy_(kept);
  }
}

}  // namespace clipper::train
