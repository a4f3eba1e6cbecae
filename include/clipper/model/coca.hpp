#pragma once
// CoCa's parts (open_clip's coca_model.py and transformer.py), with open_clip's parameter names:
//   AttentionalPooler (visual.attn_pool): query [n_queries, d], attn (nn.MultiheadAttention with
//     kdim = vdim = the ViT's width: q_proj_weight, k_proj_weight, v_proj_weight, in_proj_bias,
//     out_proj; in_proj_weight packed when the widths are equal), ln_q, ln_k;
//   MultimodalDecoder (text_decoder): resblocks.{i} (causal self-attention), cross_attn.{i}
//     (ln_1, attn, ln_1_kv, ln_2, mlp: the text tokens attend to the image tokens), ln_final,
//     text_projection [width, vocab_size] (the caption logits).
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

#include "clipper/model/linear.hpp"
#include "clipper/model/model_spec.hpp"
#include "clipper/model/transformer.hpp"

namespace clipper::model {

class Initializer;

// nn.MultiheadAttention(d, heads, kdim=c, vdim=c) as the attentional pooler holds it.
class PoolerAttentionImpl : public torch::nn::Module {
 public:
  PoolerAttentionImpl(std::int64_t dim, std::int64_t kv_dim, std::int64_t heads);
  // q: [N, Lq, dim], kv: [N, Lk, kv_dim] -> [N, Lq, dim]
  at::Tensor forward(const at::Tensor& q, const at::Tensor& kv);
  // nn.MultiheadAttention's init: xavier-uniform projections, zero biases, out_proj's weight
  // PyTorch's Linear default.
  void init_parameters(Initializer& init);
  bool packed() const { return in_proj_weight.defined(); }
  at::Tensor in_proj_weight;                               // [3d, d] when kv_dim == dim
  at::Tensor q_proj_weight, k_proj_weight, v_proj_weight;  // otherwise
  at::Tensor in_proj_bias;
  Linear out_proj{nullptr};
  std::int64_t dim, kv_dim, heads;
};
TORCH_MODULE(PoolerAttention);

// n_queries learned queries attend to the (ln_k-normed) tokens: [B, L, kv_dim] -> [B, nq, dim].
class AttentionalPoolerImpl : public torch::nn::Module {
 public:
  AttentionalPoolerImpl(std::int64_t dim, std::int64_t kv_dim, std::int64_t heads,
                        std::int64_t n_queries);
  at::Tensor forward(const at::Tensor& x);
  void init_parameters(Initializer& init);
  at::Tensor query;
  PoolerAttention attn{nullptr};
  LayerNorm ln_q{nullptr}, ln_k{nullptr};
};
TORCH_MODULE(AttentionalPooler);

// x = x + attn(ln_1(x), ln_1_kv(image), ln_1_kv(image)); x = x + mlp(ln_2(x))
class CrossAttentionBlockImpl : public torch::nn::Module {
 public:
  CrossAttentionBlockImpl(std::int64_t dim, std::int64_t heads, Activation act);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& image);
  LayerNorm ln_1{nullptr}, ln_1_kv{nullptr}, ln_2{nullptr};
  Attention attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(CrossAttentionBlock);

class MultimodalDecoderImpl : public torch::nn::Module {
 public:
  explicit MultimodalDecoderImpl(const ModelSpec& spec);
  // image: [B, Li, width] (the image tower's tokens), text: [B, Lt, width] (the text tower's
  // tokens, before ln_final), Lt <= multimodal_cfg.context_length -> logits [B, Lt, vocab].
  at::Tensor forward(const at::Tensor& image, const at::Tensor& text);
  // MultimodalTransformer.init_parameters' scheme (OpenAI's: attention N(0, w^-0.5), projections
  // N(0, w^-0.5 (2 layers)^-0.5), MLP input N(0, (2w)^-0.5), text_projection N(0, w^-0.5)) for
  // both kinds of block. open_clip 3.3.0 never calls it (it leaves PyTorch's defaults and an
  // uninitialized text_projection); a trained model's weights replace either.
  void init_parameters(Initializer& init);
  std::vector<std::vector<at::Tensor>> lock_groups();
  torch::nn::ModuleList resblocks{nullptr}, cross_attn{nullptr};
  LayerNorm ln_final{nullptr};
  at::Tensor text_projection;
  std::int64_t width, layers, context_length;
  bool grad_checkpointing = false;
};
TORCH_MODULE(MultimodalDecoder);

// The decoder's parameters, from the spec alone (flops.cpp's count).
std::int64_t decoder_params(const ModelSpec& spec);
// The attentional pooler's parameters (0 without one).
std::int64_t attn_pool_params(const ModelSpec& spec);

}  // namespace clipper::model
