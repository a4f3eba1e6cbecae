#include "clipper/model/coca.hpp"

#include <cmath>

#include "clipper/core/error.hpp"
#include "initializer.hpp"

namespace clipper::model {

namespace nn = torch::nn;

// --- The attentional pooler --------------------------------------------------------------------

PoolerAttentionImpl::PoolerAttentionImpl(std::int64_t dim_, std::int64_t kv_dim_,
                                         std::int64_t heads_)
    : dim(dim_), kv_dim(kv_dim_), heads(heads_) {
  TORCH_CHECK(dim % heads == 0, "attentional pooler width ", dim, " is not divisible by ", heads,
              " heads");
  // nn.MultiheadAttention's order: the separate projections, or the packed one, then the bias.
  if (kv_dim == dim) {
    in_proj_weight = register_parameter("in_proj_weight", at::empty({3 * dim, dim}));
  } else {
    q_proj_weight = register_parameter("q_proj_weight", at::empty({dim, dim}));
    k_proj_weight = register_parameter("k_proj_weight", at::empty({dim, kv_dim}));
    v_proj_weight = register_parameter("v_proj_weight", at::empty({dim, kv_dim}));
  }
  in_proj_bias = register_parameter("in_proj_bias", at::zeros({3 * dim}));
  out_proj = register_module("out_proj", Linear(dim, dim));
}

at::Tensor PoolerAttentionImpl::forward(const at::Tensor& q_in, const at::Tensor& kv_in) {
  const auto n = kv_in.size(0), lq = q_in.size(1), lk = kv_in.size(1), hd = dim / heads;
  const auto wq = packed() ? in_proj_weight.narrow(0, 0, dim) : q_proj_weight;
  const auto wk = packed() ? in_proj_weight.narrow(0, dim, dim) : k_proj_weight;
  const auto wv = packed() ? in_proj_weight.narrow(0, 2 * dim, dim) : v_proj_weight;
  auto q = at::linear(q_in, wq, in_proj_bias.narrow(0, 0, dim));
  auto k = at::linear(kv_in, wk, in_proj_bias.narrow(0, dim, dim));
  auto v = at::linear(kv_in, wv, in_proj_bias.narrow(0, 2 * dim, dim));
  q = q.view({q.size(0), lq, heads, hd}).transpose(1, 2).expand({n, heads, lq, hd});
  k = k.view({n, lk, heads, hd}).transpose(1, 2);
  v = v.view({n, lk, heads, hd}).transpose(1, 2);
  const auto out = at::scaled_dot_product_attention(q, k, v);
  return out_proj->forward(out.transpose(1, 2).reshape({n, lq, dim}));
}

void PoolerAttentionImpl::init_parameters(Initializer& init) {
  auto xavier = [&](const at::Tensor& w) {
    init.uniform(w, std::sqrt(6.0 / static_cast<double>(w.size(0) + w.size(1))));
  };
  if (packed()) {
    xavier(in_proj_weight);
  } else {
    xavier(q_proj_weight);
    xavier(k_proj_weight);
    xavier(v_proj_weight);
  }
  init.constant(in_proj_bias, 0.0);
  init.torch_default(out_proj->weight);
  init.constant(out_proj->bias, 0.0);
}

AttentionalPoolerImpl::AttentionalPoolerImpl(std::int64_t dim, std::int64_t kv_dim,
                                             std::int64_t heads, std::int64_t n_queries) {
  query = register_parameter("query", at::zeros({n_queries, dim}));
  attn = register_module("attn", PoolerAttention(dim, kv_dim, heads));
  ln_q = register_module("ln_q", LayerNorm(dim));
  ln_k = register_module("ln_k", LayerNorm(kv_dim));
}

at::Tensor AttentionalPoolerImpl::forward(const at::Tensor& x) {
  // The queries are the same for every sample: [1, nq, d], broadcast in the attention.
  const auto q = ln_q->forward(query.to(x.scalar_type())).unsqueeze(0);
  return attn->forward(q, ln_k->forward(x));
}

void AttentionalPoolerImpl::init_parameters(Initializer& init) {
  init.normal(query, 1.0);  // torch.randn
  attn->init_parameters(init);
  init.layer_norm(ln_q);
  init.layer_norm(ln_k);
}

// --- The multimodal decoder ----------------------------------------------------------------------

CrossAttentionBlockImpl::CrossAttentionBlockImpl(std::int64_t dim, std::int64_t heads,
                                                 Activation act) {
  ln_1 = register_module("ln_1", LayerNorm(dim));
  attn = register_module("attn", Attention(dim, heads));
  ln_1_kv = register_module("ln_1_kv", LayerNorm(dim));
  ln_2 = register_module("ln_2", LayerNorm(dim));
  mlp = register_module("mlp", Mlp(dim, mlp_width(dim, 4.0), act));
}

at::Tensor CrossAttentionBlockImpl::forward(const at::Tensor& x, const at::Tensor& image) {
  auto y = x + attn->forward_cross(ln_1->forward(x), ln_1_kv->forward(image));
  return y + mlp->forward(ln_2->forward(y));
}

MultimodalDecoderImpl::MultimodalDecoderImpl(const ModelSpec& spec)
    : width(spec.decoder_width),
      layers(spec.decoder_layers),
      context_length(spec.decoder_context_length) {
  resblocks = register_module("resblocks", nn::ModuleList());
  cross_attn = register_module("cross_attn", nn::ModuleList());
  for (std::int64_t i = 0; i < layers; ++i) {
    resblocks->push_back(
        ResidualAttentionBlock(width, spec.decoder_heads, 4.0, spec.text_activation()));
    cross_attn->push_back(CrossAttentionBlock(width, spec.decoder_heads, spec.text_activation()));
  }
  ln_final = register_module("ln_final", LayerNorm(width));
  text_projection = register_parameter("text_projection", at::zeros({width, spec.vocab_size}));
}

at::Tensor MultimodalDecoderImpl::forward(const at::Tensor& image, const at::Tensor& text) {
  TORCH_CHECK(text.dim() == 3 && image.dim() == 3, "the decoder takes [B, L, width] tokens");
  if (text.size(1) > context_length)
    throw core::InputError("the CoCa decoder reads at most multimodal_cfg.context_length = " +
                           std::to_string(context_length) + " text tokens, got " +
                           std::to_string(text.size(1)));
  const bool checkpoint = grad_checkpointing && is_training() && at::GradMode::is_enabled();
  at::Tensor x = text;
  for (std::int64_t i = 0; i < layers; ++i) {
    auto* self = resblocks->ptr<ResidualAttentionBlockImpl>(i).get();
    x = checkpoint ? checkpointed_block(*self, x, /*causal=*/true) : self->forward(x, true);
    x = cross_attn->ptr<CrossAttentionBlockImpl>(i)->forward(x, image);
  }
  return at::matmul(ln_final->forward(x), text_projection.to(x.scalar_type()));
}

void MultimodalDecoderImpl::init_parameters(Initializer& init) {
  const auto w = static_cast<double>(width);
  const double proj_std = std::pow(w, -0.5) * std::pow(2.0 * static_cast<double>(layers), -0.5);
  const double attn_std = std::pow(w, -0.5);
  const double fc_std = std::pow(2.0 * w, -0.5);
  auto block = [&](LayerNorm& ln_1, LayerNorm& ln_2, Attention& attn, Mlp& mlp) {
    init.layer_norm(ln_1);
    init.normal(attn->in_proj_weight, attn_std);
    init.constant(attn->in_proj_bias, 0.0);
    init.normal(attn->out_proj->weight, proj_std);
    init.constant(attn->out_proj->bias, 0.0);
    init.layer_norm(ln_2);
    init.linear_default(mlp->c_fc);
    init.normal(mlp->c_fc->weight, fc_std);
    init.linear_default(mlp->c_proj);
    init.normal(mlp->c_proj->weight, proj_std);
  };
  for (std::int64_t i = 0; i < layers; ++i) {
    auto s = resblocks->ptr<ResidualAttentionBlockImpl>(i);
    block(s->ln_1, s->ln_2, s->attn, s->mlp);
    auto c = cross_attn->ptr<CrossAttentionBlockImpl>(i);
    block(c->ln_1, c->ln_2, c->attn, c->mlp);
    init.layer_norm(c->ln_1_kv);
  }
  init.layer_norm(ln_final);
  init.normal(text_projection, attn_std);
}

std::vector<std::vector<at::Tensor>> MultimodalDecoderImpl::lock_groups() {
  std::vector<std::vector<at::Tensor>> groups;
  for (std::int64_t i = 0; i < layers; ++i) {
    auto g = resblocks->ptr(i)->parameters();
    for (const auto& p : cross_attn->ptr(i)->parameters()) g.push_back(p);
    groups.push_back(g);
  }
  groups.push_back({ln_final->weight, ln_final->bias, text_projection});
  return groups;
}

std::int64_t attn_pool_params(const ModelSpec& s) {
  if (!s.vision_attn_pool) return 0;
  const std::int64_t d = s.embed_dim, c = s.vision_width;
  return s.vision_attn_pool_queries * d  // query
         + d * d + 2 * d * c + 3 * d     // q, k, v projections and their bias
         + d * d + d                     // out_proj
         + 2 * d + 2 * c;                // ln_q, ln_k
}

std::int64_t decoder_params(const ModelSpec& s) {
  if (!s.coca) return 0;
  const std::int64_t w = s.decoder_width, mlp = mlp_width(w, 4.0);
  const std::int64_t block =
      4 * w /* ln_1, ln_2 */ + 3 * w * w + 3 * w + w * w + w + w * mlp + mlp + mlp * w + w;
  return s.decoder_layers * (2 * block + 2 * w /* ln_1_kv */) + 2 * w + w * s.vocab_size;
}

}  // namespace clipper::model
