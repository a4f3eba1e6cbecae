#include "clipper/model/lora.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <map>

#include "clipper/core/error.hpp"
#include "clipper/model/linear.hpp"
#include "clipper/model/transformer.hpp"

namespace clipper::model {

LoraImpl::LoraImpl(std::int64_t in, std::int64_t out, const LoraOptions& o, at::Generator gen)
    : dropout(o.dropout) {
  core::require(o.rank > 0, "LoRA rank must be positive, got " + std::to_string(o.rank));
  core::require(o.dropout >= 0.0 && o.dropout < 1.0,
                "LoRA dropout must be in [0, 1), got " + std::to_string(o.dropout));
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  A = register_parameter("A", at::empty({o.rank, in}).uniform_(-bound, bound, gen));
  B = register_parameter("B", at::zeros({out, o.rank}));
  scale = register_buffer("scale", at::scalar_tensor(o.alpha / static_cast<double>(o.rank)));
}

at::Tensor LoraImpl::forward(const at::Tensor& x, std::int64_t first, std::int64_t rows) {
  const auto in = (dropout > 0.0 && is_training()) ? at::dropout(x, dropout, true) : x;
  // The scale on the rank-r middle: r values per token instead of `out`.
  const auto mid = at::linear(in, A) * scale;
  return at::linear(mid, rows < 0 ? B : B.narrow(0, first, rows));
}

at::Tensor LoraImpl::delta() const {
  return at::matmul(B.detach().to(at::kFloat), A.detach().to(at::kFloat)) *
         scale.detach().to(at::kFloat);
}

namespace {

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

std::string shape_of(const at::Tensor& t) {
  std::string s = "[";
  for (std::int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

bool starts_with(const std::string& s, const std::string& head) {
  return s.rfind(head, 0) == 0;
}

// `name` is the tensor `base` or lies inside the module `base`.
bool is_in(const std::string& name, const std::string& base) {
  return name == base || starts_with(name, base + ".");
}

enum class Place { qkv, attn_out, mlp_fc, mlp_proj, other };

// A model::Linear's place, from its module name: "<...>.<parent>.<last>".
Place place_of_linear(const std::string& name) {
  const auto dot = name.rfind('.');
  const std::string last = dot == std::string::npos ? name : name.substr(dot + 1);
  const std::string head = dot == std::string::npos ? "" : name.substr(0, dot);
  const auto dot2 = head.rfind('.');
  const std::string parent = dot2 == std::string::npos ? head : head.substr(dot2 + 1);
  if (parent.find("mlp") != std::string::npos)
    return (last == "c_fc" || last == "fc1") ? Place::mlp_fc : Place::mlp_proj;
  if (parent.find("attn") != std::string::npos) {
    for (const char* q : {"q_proj", "k_proj", "v_proj", "qkv", "q", "kv"})
      if (last == q) return Place::qkv;
    return Place::attn_out;
  }
  return Place::other;
}

bool wanted(const LoraPlan& p, Place place) {
  switch (place) {
    case Place::qkv:
      return p.qkv;
    case Place::attn_out:
      return p.attn_out;
    case Place::mlp_fc:
      return p.mlp_fc;
    case Place::mlp_proj:
      return p.mlp_proj;
    case Place::other:
      return p.other;
  }
  return false;
}

// Attaches the adapters; returns how many.
std::int64_t attach_adapters(torch::nn::Module& model, const LoraPlan& plan, at::Generator& gen) {
  std::int64_t n = 0;
  // named_modules() lists a module before its children: collect first, the walk must not see
  // the adapters it attaches.
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    const std::string& name = item.key();
    const bool image = starts_with(name, "visual.");
    if (image ? !plan.image : !plan.text) continue;
    if (auto* attn = item.value()->as<AttentionImpl>()) {
      if (!plan.qkv) continue;
      attn->attach_in_proj_lora(plan.options, gen);
      ++n;
    } else if (auto* lin = item.value()->as<LinearImpl>()) {
      if (!wanted(plan, place_of_linear(name))) continue;
      lin->attach_lora(plan.options, gen);
      ++n;
    }
  }
  return n;
}

}  // namespace

LoraReport apply_lora(torch::nn::Module& model, const LoraPlan& plan, std::uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed ^ 0x4c6f5241ull);
  LoraReport r;
  r.adapters = attach_adapters(model, plan, gen);
  if (r.adapters == 0)
    throw core::InputError(
        "lora: no linear layer of the model matches lora.targets in lora.towers; nothing to "
        "adapt");
  std::vector<bool> used(plan.trainable.size(), false);
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    const bool adapter = is_lora_tensor(name);
    bool keep = adapter;
    for (std::size_t i = 0; i < plan.trainable.size(); ++i)
      if (is_in(name, plan.trainable[i])) keep = used[i] = true;
    item.value().set_requires_grad(keep);
    r.total_values += item.value().numel();
    if (adapter) r.adapter_values += item.value().numel();
    if (keep) r.trainable_values += item.value().numel();
  }
  for (std::size_t i = 0; i < plan.trainable.size(); ++i)
    if (!used[i])
      throw core::InputError("lora.trainable: '" + plan.trainable[i] +
                             "' names no parameter of the model (give a state-dict name or a "
                             "module prefix, e.g. logit_scale, visual.ln_post)");
  return r;
}

bool is_lora_tensor(const std::string& name) {
  return ends_with(name, "lora.A") || ends_with(name, "lora.B") || ends_with(name, "lora.scale");
}

std::int64_t merge_lora_state(std::vector<std::pair<std::string, at::Tensor>>& tensors,
                              const std::string& origin) {
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < tensors.size(); ++i) index[tensors[i].first] = i;
  auto get = [&](const std::string& name, const std::string& adapter) -> at::Tensor& {
    const auto it = index.find(name);
    if (it == index.end())
      throw core::InputError(origin + ": LoRA adapter '" + adapter + "' has no '" + name +
                             "' beside it");
    return tensors[it->second].second;
  };
  std::int64_t merged = 0;
  at::NoGradGuard no_grad;
  for (const auto& [name, unused] : std::map<std::string, std::size_t>(index)) {
    if (!is_lora_tensor(name)) continue;
    const std::string prefix = name.substr(0, name.rfind("lora.") + 5);  // "P lora."
    const std::string adapter = prefix.substr(0, prefix.size() - 1);
    if (name != prefix + "A") {
      get(prefix + "A", adapter);  // B or scale without A
      continue;
    }
    const at::Tensor a = get(prefix + "A", adapter), b = get(prefix + "B", adapter),
                     s = get(prefix + "scale", adapter);
    at::Tensor& w = get(prefix.substr(0, prefix.size() - 5) + "weight", adapter);
    if (a.dim() != 2 || b.dim() != 2 || w.dim() != 2 || s.numel() != 1 || b.size(1) != a.size(0) ||
        b.size(0) != w.size(0) || a.size(1) != w.size(1))
      throw core::InputError(origin + ": LoRA adapter '" + adapter +
                             "' does not fit its weight: A " + shape_of(a) + ", B " + shape_of(b) +
                             ", scale " + shape_of(s) + ", weight " + shape_of(w) +
                             " (expected A [r, in], B [out, r], a scalar scale, weight [out, in])");
    const auto delta =
        at::matmul(b.to(at::kFloat), a.to(at::kFloat)) * s.to(at::kFloat).reshape({});
    w = (w.to(at::kFloat) + delta.to(w.device())).to(w.scalar_type());
    ++merged;
  }
  std::vector<std::pair<std::string, at::Tensor>> kept;
  kept.reserve(tensors.size());
  for (auto& item : tensors)
    if (!is_lora_tensor(item.first)) kept.push_back(std::move(item));
  tensors = std::move(kept);
  return merged;
}

}  // namespace clipper::model
