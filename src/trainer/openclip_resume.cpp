#include "clipper/trainer/openclip_resume.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <sstream>

#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/io/torch_checkpoint.hpp"
#include "clipper/optim/param_groups.hpp"
#include "clipper/train/ema.hpp"
#include "clipper/train/step.hpp"

namespace clipper::trainer {
namespace {

using core::InputError;
using io::shape_text;
using io::strip_module;

// OpenCLIP's scalar logit_scale / logit_bias may be clipper's [1] (io::load_state_dict reshapes).
bool same_shape(const std::string& name, const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() == b.sizes()) return true;
  return (name == "logit_scale" || name == "logit_bias") && a.numel() == 1 && b.numel() == 1;
}

struct Mapping {
  std::vector<std::string> groups[2];  // main.py's param groups: no weight decay, weight decay
};

// The file's names that the model does not have, at most a few of them.
void check_names(const io::TensorList& file, const std::map<std::string, at::Tensor>& all,
                 const std::string& where) {
  std::vector<std::string> unknown;
  for (const auto& [name, t] : file)
    if (!all.count(name)) unknown.push_back(name);
  if (unknown.empty()) return;
  std::string list;
  for (std::size_t i = 0; i < unknown.size() && i < 5; ++i)
    list += (i ? ", '" : "'") + unknown[i] + "'";
  if (unknown.size() > 5) list += " and " + std::to_string(unknown.size() - 5) + " more";
  throw InputError(where + ": holds " + list +
                   ", which the model does not have (another architecture? check model.name)");
}

// main.py's groups over the file's parameters (state-dict order is named_parameters() order with
// the buffers in between), split by `rule`; trainable means trainable in this model (its locks).
Mapping map_parameters(const io::TensorList& file, const model::ClipImpl& model,
                       const std::string& where, config::NoDecay rule) {
  std::map<std::string, at::Tensor> params, all;
  for (const auto& item : model.named_parameters()) params[item.key()] = item.value();
  for (const auto& [n, t] : model.state_dict()) all[n] = t;
  check_names(file, all, where);
  Mapping m;
  std::set<std::string> seen;
  for (const auto& [name, t] : file) {
    const auto it = params.find(name);
    if (it == params.end()) continue;  // a buffer
    if (!same_shape(name, t, it->second))
      throw InputError(where + ": '" + name + "' has shape " + shape_text(t.sizes()) +
                       ", the model's is " + shape_text(it->second.sizes()));
    seen.insert(name);
    if (it->second.requires_grad())
      m.groups[optim::excluded_from_decay(name, t, rule) ? 0 : 1].push_back(name);
  }
  for (const auto& [name, p] : params)
    if (p.requires_grad() && !seen.count(name))
      throw InputError(where + ": has no '" + name + "', a trainable parameter of the model");
  return m;
}

// AdamW's state of one parameter: {step, exp_avg, exp_avg_sq}, shaped as the parameter.
optim::WholeMoments moments_of(const std::map<std::string, at::Tensor>* state,
                               const std::string& name, const at::Tensor& param,
                               const std::string& where) {
  if (!state)  // never had a gradient: torch.optim keeps no state, as fresh moments are
    return {name, at::zeros({param.numel()}), at::zeros({param.numel()}), 0.0};
  if (state->count("max_exp_avg_sq"))
    throw InputError(where + ": the optimizer ran with amsgrad, which clipper's AdamW does not do");
  const std::set<std::string> adamw = {"step", "exp_avg", "exp_avg_sq"};
  for (const auto& [k, v] : *state)
    if (!adamw.count(k))
      throw InputError(where + ": the optimizer state of '" + name + "' holds '" + k +
                       "': not torch.optim.AdamW's state (step, exp_avg, exp_avg_sq); only "
                       "--opt adamw checkpoints can be continued");
  for (const auto& k : adamw)
    if (!state->count(k))
      throw InputError(where + ": the optimizer state of '" + name + "' has no '" + k + "'");
  const auto& m = state->at("exp_avg");
  const auto& v = state->at("exp_avg_sq");
  if (m.numel() != param.numel() || v.numel() != param.numel())
    throw InputError(where + ": the AdamW moments of '" + name + "' have shape " +
                     shape_text(m.sizes()) + ", the parameter's is " + shape_text(param.sizes()));
  return {name, m.to(at::kFloat), v.to(at::kFloat), state->at("step").item<double>()};
}

void warn_if_differs(const std::string& where, const std::string& what, double file, double run,
                     const std::string& key) {
  if (std::abs(file - run) <= 1e-12 * std::max(std::abs(file), std::abs(run))) return;
  CLIPPER_WARN(where << ": OpenCLIP trained with " << what << " " << file << ", this run uses "
                     << run << " (set " << key << ": " << file
                     << " to continue as OpenCLIP would)");
}

bool groups_fit(const io::TorchOptimizerState& o, const Mapping& m) {
  return o.groups.size() == 2 && o.groups[0].params.size() == m.groups[0].size() &&
         o.groups[1].params.size() == m.groups[1].size();
}

// The rule the file's two groups were split by: open_clip 3.3.0's main.py (openclip3), or else
// open_clip main's optim.py (modern) when only its split fits the group sizes.
config::NoDecay file_rule(const io::TorchOptimizerState& o, const io::TensorList& file,
                          const model::ClipImpl& model, const std::string& where, Mapping* m) {
  *m = map_parameters(file, model, where, config::NoDecay::openclip3);
  if (groups_fit(o, *m)) return config::NoDecay::openclip3;
  Mapping modern = map_parameters(file, model, where, config::NoDecay::modern);
  if (!groups_fit(o, modern)) return config::NoDecay::openclip3;  // check_groups names the sizes
  *m = std::move(modern);
  return config::NoDecay::modern;
}

// amsgrad / maximize refused; betas, eps and weight decay compared with the run's (which win).
void check_groups(const io::TorchOptimizerState& o, const Mapping& m,
                  const optim::AdamWOptions& adamw, double weight_decay, const std::string& where) {
  if (!groups_fit(o, m)) {
    std::ostringstream os;
    os << where << ": the optimizer has " << o.groups.size() << " param group(s) of";
    for (const auto& g : o.groups) os << " " << g.params.size();
    os << " parameters; open_clip_train's main.py makes 2 for this model, of " << m.groups[0].size()
       << " (no weight decay) and " << m.groups[1].size()
       << ": another model, other locked towers (model.lock_*), or another optimizer";
    throw InputError(os.str());
  }
  for (std::size_t g = 0; g < 2; ++g) {
    const auto& s = o.groups[g].scalars;
    for (const char* flag : {"amsgrad", "maximize"})
      if (s.count(flag) && s.at(flag) != 0)
        throw InputError(where + ": the optimizer ran with " + flag +
                         ", which clipper's AdamW does not do");
    const auto b = o.groups[g].tuples.find("betas");
    if (b != o.groups[g].tuples.end() && b->second.size() == 2) {
      warn_if_differs(where, "beta1", b->second[0], adamw.beta1, "optim.beta1");
      warn_if_differs(where, "beta2", b->second[1], adamw.beta2, "optim.beta2");
    }
    if (s.count("eps")) warn_if_differs(where, "eps", s.at("eps"), adamw.eps, "optim.eps");
  }
  if (o.groups[1].scalars.count("weight_decay"))
    warn_if_differs(where, "weight decay", o.groups[1].scalars.at("weight_decay"), weight_decay,
                    "optim.weight_decay");
}

}  // namespace

OpenClipResume read_openclip_resume(const std::string& path, const model::ClipImpl& model,
                                    const optim::AdamWOptions& adamw, double weight_decay,
                                    config::NoDecay run_rule) {
  const std::string where = "checkpoint.resume_openclip '" + path + "'";
  auto ck = io::read_torch_train_checkpoint(path);
  for (const char* key : {"epoch", "state_dict", "optimizer"})
    if (std::find(ck.keys.begin(), ck.keys.end(), key) == ck.keys.end())
      throw InputError(where + ": has no '" + key + "': not an open_clip_train epoch_N.pt " +
                       "(a bare state dict goes to model.init_from)");
  if (*ck.epoch < 0) throw InputError(where + ": 'epoch' is negative");
  OpenClipResume r;
  r.path = path;
  r.epoch = *ck.epoch;
  r.name = ck.name;
  r.has_scaler = std::find(ck.keys.begin(), ck.keys.end(), "scaler") != ck.keys.end();
  for (auto& [n, t] : ck.state_dict) r.state_dict.emplace_back(strip_module(n), std::move(t));
  Mapping m;
  r.no_decay = file_rule(*ck.optimizer, r.state_dict, model, where, &m);
  check_groups(*ck.optimizer, m, adamw, weight_decay, where);
  if (r.no_decay != run_rule)
    CLIPPER_WARN(where << ": OpenCLIP left " << config::name_of(r.no_decay)
                       << "'s parameters undecayed, this run uses optim.no_decay "
                       << config::name_of(run_rule) << " (set optim.no_decay: "
                       << config::name_of(r.no_decay) << " to continue as OpenCLIP would)");
  std::map<std::string, at::Tensor> params;
  for (const auto& item : model.named_parameters()) params[item.key()] = item.value();
  std::vector<optim::WholeMoments> moments;
  for (std::size_t g = 0; g < 2; ++g)
    for (std::size_t j = 0; j < m.groups[g].size(); ++j) {
      const auto& name = m.groups[g][j];
      const auto it = ck.optimizer->state.find(ck.optimizer->groups[g].params[j]);
      moments.push_back(moments_of(it == ck.optimizer->state.end() ? nullptr : &it->second, name,
                                   params.at(name), where));
      r.optimizer_steps = std::max(r.optimizer_steps, moments.back().step);
    }
  r.moments = optim::whole_flat_shards(moments);
  return r;
}

void load_openclip_resume(const OpenClipResume& r, train::TrainStep& step) {
  io::load_state_dict(*step.model(), r.state_dict, r.path);
  optim::SavedFlatShards saved;
  saved.json = {r.moments.json};
  saved.tensors = [&r](int) { return r.moments.tensors; };
  saved.where = r.path;
  step.load_optimizer_shards(saved);
  if (step.ema()) step.ema()->reset_to_model();
}

}  // namespace clipper::trainer
