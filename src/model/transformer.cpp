#include "clipper/model/transformer.hpp"

#include <ATen/autocast_mode.h>
#include <torch/autograd.h>

#include <mutex>
#include <optional>
#include <string>

namespace clipper::model {

at::Tensor activate(const at::Tensor& x, Activation act) {
  if (act == Activation::quick_gelu) return x * at::sigmoid(x * 1.702);
  return at::gelu(x, act == Activation::gelu_tanh ? "tanh" : "none");
}

// --- LayerNorm -----------------------------------------------------------------------------------

LayerNormImpl::LayerNormImpl(std::int64_t dim_, double eps_) : dim(dim_), eps(eps_) {
  weight = register_parameter("weight", at::ones({dim}));
  bias = register_parameter("bias", at::zeros({dim}));
}

at::Tensor LayerNormImpl::forward(const at::Tensor& x) {
  return at::layer_norm(x, {dim}, weight, bias, eps).to(x.scalar_type());
}

// --- Attention -----------------------------------------------------------------------------------

AttentionImpl::AttentionImpl(std::int64_t dim_, std::int64_t heads_) : dim(dim_), heads(heads_) {
  TORCH_CHECK(dim % heads == 0, "attention width ", dim, " is not divisible by ", heads, " heads");
  in_proj_weight = register_parameter("in_proj_weight", at::empty({3 * dim, dim}));
  in_proj_bias = register_parameter("in_proj_bias", at::zeros({3 * dim}));
  out_proj = register_module("out_proj", Linear(dim, dim));
}

void AttentionImpl::attach_in_proj_lora(const LoraOptions& options, at::Generator gen) {
  if (in_proj_lora) unregister_module("in_proj_lora");
  in_proj_lora = register_module("in_proj_lora", Lora(dim, 3 * dim, options, std::move(gen)));
  in_proj_lora->to(in_proj_weight.device());
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, bool causal) {
  const auto n = x.size(0), l = x.size(1);
  // [N, L, 3d] -> [3, N, heads, L, head_dim]; rows of in_proj_weight are q, k, v.
  auto qkv = at::linear(x, in_proj_weight, in_proj_bias);
  if (in_proj_lora) qkv = qkv + in_proj_lora->forward(x);
  qkv = qkv.view({n, l, 3, heads, dim / heads}).permute({2, 0, 3, 1, 4});
  auto out = at::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], {}, 0.0, causal);
  return out_proj->forward(out.transpose(1, 2).reshape({n, l, dim}));
}

at::Tensor AttentionImpl::forward_query(const at::Tensor& q_in, const at::Tensor& kv_in,
                                        const at::Tensor& last_key) {
  const auto n = kv_in.size(0), l = kv_in.size(1), hd = dim / heads;
  auto q = at::linear(q_in, in_proj_weight.narrow(0, 0, dim), in_proj_bias.narrow(0, 0, dim));
  auto kv = at::linear(kv_in, in_proj_weight.narrow(0, dim, 2 * dim),
                       in_proj_bias.narrow(0, dim, 2 * dim));
  if (in_proj_lora) {  // the adapter's q rows for the query, its k and v rows for the rest
    q = q + in_proj_lora->forward(q_in, 0, dim);
    kv = kv + in_proj_lora->forward(kv_in, dim, 2 * dim);
  }
  q = q.view({n, 1, heads, hd}).transpose(1, 2);                // [N, heads, 1, hd]
  kv = kv.view({n, l, 2, heads, hd}).permute({2, 0, 3, 1, 4});  // [2, N, heads, L, hd]
  std::optional<at::Tensor> mask;
  if (last_key.defined())
    mask =
        at::arange(l, last_key.options()).view({1, l}).le(last_key.view({n, 1})).view({n, 1, 1, l});
  const auto out = at::scaled_dot_product_attention(q, kv[0], kv[1], mask);
  return out_proj->forward(out.transpose(1, 2).reshape({n, 1, dim}));
}

at::Tensor AttentionImpl::forward_masked(const at::Tensor& x, const at::Tensor& mask) {
  const auto n = x.size(0), l = x.size(1);
  auto qkv = at::linear(x, in_proj_weight, in_proj_bias);
  if (in_proj_lora) qkv = qkv + in_proj_lora->forward(x);
  qkv = qkv.view({n, l, 3, heads, dim / heads}).permute({2, 0, 3, 1, 4});
  const auto out = at::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], mask);
  return out_proj->forward(out.transpose(1, 2).reshape({n, l, dim}));
}

at::Tensor AttentionImpl::forward_cross(const at::Tensor& q_in, const at::Tensor& kv_in) {
  const auto n = q_in.size(0), lq = q_in.size(1), lk = kv_in.size(1), hd = dim / heads;
  auto q = at::linear(q_in, in_proj_weight.narrow(0, 0, dim), in_proj_bias.narrow(0, 0, dim));
  auto kv = at::linear(kv_in, in_proj_weight.narrow(0, dim, 2 * dim),
                       in_proj_bias.narrow(0, dim, 2 * dim));
  if (in_proj_lora) {
    q = q + in_proj_lora->forward(q_in, 0, dim);
    kv = kv + in_proj_lora->forward(kv_in, dim, 2 * dim);
  }
  q = q.view({n, lq, heads, hd}).transpose(1, 2);
  kv = kv.view({n, lk, 2, heads, hd}).permute({2, 0, 3, 1, 4});
  const auto out = at::scaled_dot_product_attention(q, kv[0], kv[1]);
  return out_proj->forward(out.transpose(1, 2).reshape({n, lq, dim}));
}

// --- MLP and residual block --------------------------------------------------------------------

MlpImpl::MlpImpl(std::int64_t dim, std::int64_t hidden, Activation act_) : act(act_) {
  c_fc = register_module("c_fc", Linear(dim, hidden));
  c_proj = register_module("c_proj", Linear(hidden, dim));
}

at::Tensor MlpImpl::forward(const at::Tensor& x) {
  return c_proj->forward(activate(c_fc->forward(x), act));
}

ResidualAttentionBlockImpl::ResidualAttentionBlockImpl(std::int64_t dim, std::int64_t heads,
                                                       double mlp_ratio, Activation act,
                                                       double norm_eps) {
  ln_1 = register_module("ln_1", LayerNorm(dim, norm_eps));
  attn = register_module("attn", Attention(dim, heads));
  ln_2 = register_module("ln_2", LayerNorm(dim, norm_eps));
  mlp = register_module("mlp", Mlp(dim, mlp_width(dim, mlp_ratio), act));
}

at::Tensor ResidualAttentionBlockImpl::forward(const at::Tensor& x, bool causal) {
  auto y = x + attn->forward(ln_1->forward(x), causal);
  return y + mlp->forward(ln_2->forward(y));
}

at::Tensor ResidualAttentionBlockImpl::forward_masked(const at::Tensor& x, const at::Tensor& mask) {
  auto y = x + attn->forward_masked(ln_1->forward(x), mask);
  return y + mlp->forward(ln_2->forward(y));
}

at::Tensor ResidualAttentionBlockImpl::forward_token(const at::Tensor& x, const at::Tensor& index,
                                                     bool causal) {
  const auto n = x.size(0), d = x.size(2);
  const auto h = ln_1->forward(x);  // every token: the keys and values
  const auto at_index = index.view({n, 1, 1}).expand({n, 1, d});
  auto y = x.gather(1, at_index) +
           attn->forward_query(h.gather(1, at_index), h, causal ? index : at::Tensor());
  y = y + mlp->forward(ln_2->forward(y));
  return y.squeeze(1);
}

// --- Gradient checkpointing --------------------------------------------------------------------

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct AutocastState {
  bool cuda = false, cpu = false;
  at::ScalarType cuda_dtype = at::kHalf, cpu_dtype = at::kBFloat16;
  static AutocastState current() {
    AutocastState s;
    s.cuda = at::autocast::is_autocast_enabled(at::kCUDA);
    s.cpu = at::autocast::is_autocast_enabled(at::kCPU);
    s.cuda_dtype = at::autocast::get_autocast_dtype(at::kCUDA);
    s.cpu_dtype = at::autocast::get_autocast_dtype(at::kCPU);
    return s;
  }
  void apply() const {
    at::autocast::set_autocast_enabled(at::kCUDA, cuda);
    at::autocast::set_autocast_enabled(at::kCPU, cpu);
    at::autocast::set_autocast_dtype(at::kCUDA, cuda_dtype);
    at::autocast::set_autocast_dtype(at::kCPU, cpu_dtype);
  }
};

// The recompute's autocast region, entered and left as torch.amp.autocast does: it raises the
// nesting and, when the outermost region ends, clears the weight-cast cache. Without that the
// bf16 copies of the weights cast here (backward runs outside the forward's region) would outlive
// the optimizer step, and the next forward would read last step's weights. Restores the
// thread's autocast state when it goes out of scope.
class AutocastScope {
 public:
  explicit AutocastScope(const AutocastState& want) : saved_(AutocastState::current()) {
    want.apply();
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    saved_.apply();
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  AutocastState saved_;
};

at::Tensor generator_state(const at::Device& device) {
  auto gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_generator_state(const at::Device& device, const at::Tensor& state) {
  auto gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

// Sets the device's default generator to `state` and, when it goes out of scope, back to where
// it was.
class RngScope {
 public:
  RngScope(const at::Device& device, const at::Tensor& state)
      : device_(device), saved_(generator_state(device)) {
    set_generator_state(device_, state);
  }
  ~RngScope() { set_generator_state(device_, saved_); }
  RngScope(const RngScope&) = delete;
  RngScope& operator=(const RngScope&) = delete;

 private:
  at::Device device_;
  at::Tensor saved_;
};

// Whether the block draws random numbers in training (an adapter with dropout).
bool has_dropout(BlockImpl& block) {
  for (const auto& m : block.modules(/*include_self=*/false))
    if (const auto* lora = m->as<LoraImpl>(); lora && lora->dropout > 0.0) return true;
  return false;
}

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList params,
                            std::int64_t block_address, bool causal, bool keep_rng) {
    const auto ac = AutocastState::current();
    // A block with dropout (LoRA adapters) draws its masks again in the recompute: from the
    // generator state the forward started with, as torch.utils.checkpoint does.
    if (keep_rng) ctx->saved_data["rng"] = generator_state(x.device());
    ctx->saved_data["block"] = block_address;
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["n_params"] = static_cast<std::int64_t>(params.size());
    ctx->saved_data["ac_cuda"] = ac.cuda;
    ctx->saved_data["ac_cpu"] = ac.cpu;
    ctx->saved_data["ac_cuda_dtype"] = static_cast<std::int64_t>(ac.cuda_dtype);
    ctx->saved_data["ac_cpu_dtype"] = static_cast<std::int64_t>(ac.cpu_dtype);
    ctx->save_for_backward({x});
    auto* block = reinterpret_cast<BlockImpl*>(block_address);
    return block->forward(x, causal);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto* block = reinterpret_cast<BlockImpl*>(ctx->saved_data["block"].toInt());
    const bool causal = ctx->saved_data["causal"].toBool();
    const auto n_params = ctx->saved_data["n_params"].toInt();
    AutocastState ac;
    ac.cuda = ctx->saved_data["ac_cuda"].toBool();
    ac.cpu = ctx->saved_data["ac_cpu"].toBool();
    ac.cuda_dtype = static_cast<at::ScalarType>(ctx->saved_data["ac_cuda_dtype"].toInt());
    ac.cpu_dtype = static_cast<at::ScalarType>(ctx->saved_data["ac_cpu_dtype"].toInt());

    const auto saved = ctx->get_saved_variables();
    const bool x_needs_grad = ctx->needs_input_grad(0);
    const at::Tensor x = saved[0].detach().requires_grad_(x_needs_grad);
    const auto params = block->parameters();
    TORCH_CHECK(static_cast<std::int64_t>(params.size()) == n_params,
                "checkpointed block changed its parameters between forward and backward");

    variable_list inputs;
    std::vector<std::int64_t> where;  // index in the returned list
    if (x_needs_grad) {
      inputs.push_back(x);
      where.push_back(0);
    }
    for (std::int64_t i = 0; i < n_params; ++i)
      if (ctx->needs_input_grad(1 + i)) {
        inputs.push_back(params[i]);
        where.push_back(1 + i);
      }

    variable_list result(static_cast<std::size_t>(n_params + 4));
    if (inputs.empty() || !grad_outputs[0].defined()) return result;
    at::Tensor y;
    {
      torch::AutoGradMode grad_on(true);
      AutocastScope autocast(ac);
      std::optional<RngScope> rng;
      if (ctx->saved_data.count("rng")) rng.emplace(x.device(), ctx->saved_data["rng"].toTensor());
      y = block->forward(x, causal);
    }
    const auto grads = torch::autograd::grad({y}, inputs, {grad_outputs[0]}, /*retain_graph=*/false,
                                             /*create_graph=*/false, /*allow_unused=*/true);
    for (std::size_t i = 0; i < grads.size(); ++i) result[where[i]] = grads[i];
    return result;
  }
};

}  // namespace

at::Tensor checkpointed_block(BlockImpl& block, const at::Tensor& x, bool causal) {
  const auto params = block.parameters();
  return CheckpointFunction::apply(x, at::TensorList(params),
                                   reinterpret_cast<std::int64_t>(&block), causal,
                                   has_dropout(block));
}

// --- Transformer -------------------------------------------------------------------------------

TransformerImpl::TransformerImpl(std::int64_t width_, std::int64_t layers_, std::int64_t heads,
                                 double mlp_ratio, Activation act, double norm_eps)
    : width(width_), layers(layers_) {
  resblocks = register_module("resblocks", torch::nn::ModuleList());
  for (std::int64_t i = 0; i < layers; ++i)
    resblocks->push_back(ResidualAttentionBlock(width, heads, mlp_ratio, act, norm_eps));
}

at::Tensor TransformerImpl::forward_token(const at::Tensor& x_in, const at::Tensor& index,
                                          bool causal) {
  TORCH_CHECK(!resblocks->is_empty(), "a transformer without blocks has no token to pool");
  const bool checkpoint = grad_checkpointing && is_training() && at::GradMode::is_enabled();
  at::Tensor x = x_in;
  const auto last = resblocks->size() - 1;
  for (std::size_t i = 0; i < last; ++i) {
    auto* blk = resblocks->ptr<ResidualAttentionBlockImpl>(i).get();
    x = checkpoint ? checkpointed_block(*blk, x, causal) : blk->forward(x, causal);
  }
  return resblocks->ptr<ResidualAttentionBlockImpl>(last)->forward_token(x, index, causal);
}

at::Tensor TransformerImpl::forward_masked(const at::Tensor& x_in, const at::Tensor& mask) {
  at::Tensor x = x_in;
  for (std::size_t i = 0; i < resblocks->size(); ++i)
    x = resblocks->ptr<ResidualAttentionBlockImpl>(i)->forward_masked(x, mask);
  return x;
}

ResidualAttentionBlock TransformerImpl::block(std::int64_t i) const {
  return ResidualAttentionBlock(resblocks->ptr<ResidualAttentionBlockImpl>(i));
}

at::Tensor TransformerImpl::forward(const at::Tensor& x_in, bool causal) {
  const bool checkpoint = grad_checkpointing && is_training() && at::GradMode::is_enabled();
  at::Tensor x = x_in;
  for (std::size_t i = 0; i < resblocks->size(); ++i) {
    auto* blk = resblocks->ptr<ResidualAttentionBlockImpl>(i).get();
    x = checkpoint ? checkpointed_block(*blk, x, causal) : blk->forward(x, causal);
  }
  return x;
}

}  // namespace clipper::model
