#pragma once
// The transformer pieces shared by the image and text towers, with OpenCLIP's parameter names:
//   ln_1, attn.in_proj_weight [3d, d] (rows q, k, v), attn.in_proj_bias,
//   attn.out_proj.{weight,bias}, ln_2, mlp.c_fc, mlp.c_proj; a Transformer holds them as
//   resblocks.{i}.
// Attention runs on at::scaled_dot_product_attention (flash / memory-efficient kernels on GPU).
// Linear layers are model::Linear (optional LoRA adapter); the packed in_proj has its own adapter
// slot, attn.in_proj_lora (model/lora.hpp).
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

#include "clipper/model/linear.hpp"
#include "clipper/model/lora.hpp"
#include "clipper/model/spec_choices.hpp"

namespace clipper::model {

at::Tensor activate(const at::Tensor& x, Activation act);

// LayerNorm over the last dimension whose output has the input's dtype, like OpenCLIP's
// LayerNorm (under autocast layer_norm computes in fp32). eps: 1e-5 (OpenCLIP), 1e-6 (SigLIP).
class LayerNormImpl : public torch::nn::Module {
 public:
  explicit LayerNormImpl(std::int64_t dim, double eps = 1e-5);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight, bias;
  std::int64_t dim;
  double eps;
};
TORCH_MODULE(LayerNorm);

// Multi-head self-attention with OpenCLIP's packed input projection.
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(std::int64_t dim, std::int64_t heads);
  // x: [N, L, d]. causal: token i attends to tokens 0..i only.
  at::Tensor forward(const at::Tensor& x, bool causal = false);
  // One query per sequence: q_in [N, 1, d] attends to the keys and values of kv_in [N, L, d].
  // last_key [N] (int64, optional): query n sees keys 0..last_key[n] only (the causal mask's row
  // for that query). Returns [N, 1, d].
  at::Tensor forward_query(const at::Tensor& q_in, const at::Tensor& kv_in,
                           const at::Tensor& last_key = {});
  // x: [N, L, d]; mask: bool, broadcastable to [N, heads, L, L], true where a query may attend
  // to a key (CoCa's text tower: causal and pad-masked keys).
  at::Tensor forward_masked(const at::Tensor& x, const at::Tensor& mask);
  // Cross-attention: queries from q_in [N, Lq, d], keys and values from kv_in [N, Lk, d] (the
  // packed projection's q rows for the first, k and v rows for the second), no mask.
  at::Tensor forward_cross(const at::Tensor& q_in, const at::Tensor& kv_in);
  // Attaches an adapter to the packed input projection (output [.., 3d], rows q, k, v), registered
  // as "in_proj_lora"; out_proj has its own (out_proj->attach_lora).
  void attach_in_proj_lora(const LoraOptions& options, at::Generator gen);
  at::Tensor in_proj_weight, in_proj_bias;
  Lora in_proj_lora{nullptr};
  Linear out_proj{nullptr};
  std::int64_t dim, heads;
};
TORCH_MODULE(Attention);

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(std::int64_t dim, std::int64_t hidden, Activation act);
  at::Tensor forward(const at::Tensor& x);
  Linear c_fc{nullptr}, c_proj{nullptr};
  Activation act;
};
TORCH_MODULE(Mlp);

// A pre-norm transformer block whose activations gradient checkpointing can recompute
// (checkpointed_block); OpenCLIP's and timm's blocks differ only in their parameter names.
class BlockImpl : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& x, bool causal) = 0;
};

// x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))
class ResidualAttentionBlockImpl : public BlockImpl {
 public:
  ResidualAttentionBlockImpl(std::int64_t dim, std::int64_t heads, double mlp_ratio, Activation act,
                             double norm_eps = 1e-5);
  at::Tensor forward(const at::Tensor& x, bool causal = false) override;
  // The block's output at one token per sequence, index [N] (int64), as [N, d]: what forward()
  // gives at those tokens, computing queries, attention output and MLP for those tokens only.
  at::Tensor forward_token(const at::Tensor& x, const at::Tensor& index, bool causal = false);
  // forward() with a boolean attention mask (AttentionImpl::forward_masked).
  at::Tensor forward_masked(const at::Tensor& x, const at::Tensor& mask);
  LayerNorm ln_1{nullptr}, ln_2{nullptr};
  Attention attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(ResidualAttentionBlock);

class TransformerImpl : public torch::nn::Module {
 public:
  TransformerImpl(std::int64_t width, std::int64_t layers, std::int64_t heads, double mlp_ratio,
                  Activation act, double norm_eps = 1e-5);
  // x: [N, L, width]. With grad_checkpointing on (and in training with grad mode on), each block
  // keeps only its input and recomputes its activations during backward.
  at::Tensor forward(const at::Tensor& x, bool causal = false);
  // The output at one token per sequence, index [N] (int64), as [N, width]: the towers pool a
  // single token (class token, end-of-text token), and the last block's other outputs would be
  // discarded, so the last block computes only that token (its keys and values still see every
  // token). The same values as forward(x).gather(index), for a fraction of the last block's work.
  at::Tensor forward_token(const at::Tensor& x, const at::Tensor& index, bool causal = false);
  // Every block with a boolean attention mask (AttentionImpl::forward_masked); no gradient
  // checkpointing on this path.
  at::Tensor forward_masked(const at::Tensor& x, const at::Tensor& mask);
  ResidualAttentionBlock block(std::int64_t i) const;
  torch::nn::ModuleList resblocks{nullptr};
  std::int64_t width, layers;
  bool grad_checkpointing = false;
};
TORCH_MODULE(Transformer);

// Runs `block` on `x` keeping only `x`: activations are recomputed in backward. Gradients reach
// `x` and the block's parameters (also when `x` itself needs none). Autocast state is carried
// into the recomputation.
at::Tensor checkpointed_block(BlockImpl& block, const at::Tensor& x, bool causal);

// Number of MLP hidden units, as OpenCLIP computes it: int(dim * mlp_ratio).
inline std::int64_t mlp_width(std::int64_t dim, double mlp_ratio) {
  return static_cast<std::int64_t>(static_cast<double>(dim) * mlp_ratio);
}

}  // namespace clipper::model
