#include "clipper/model/timm_vit.hpp"

#include <algorithm>
#include <cmath>

#include "initializer.hpp"
#include "tower_costs.hpp"

namespace clipper::model {

namespace nn = torch::nn;

// --- Blocks --------------------------------------------------------------------------------------

TimmMlpImpl::TimmMlpImpl(std::int64_t dim, std::int64_t hidden, Activation act_) : act(act_) {
  fc1 = register_module("fc1", Linear(dim, hidden));
  fc2 = register_module("fc2", Linear(hidden, dim));
}

at::Tensor TimmMlpImpl::forward(const at::Tensor& x) {
  return fc2->forward(activate(fc1->forward(x), act));
}

TimmAttentionImpl::TimmAttentionImpl(std::int64_t dim_, std::int64_t heads_)
    : dim(dim_), heads(heads_) {
  TORCH_CHECK(dim % heads == 0, "attention width ", dim, " is not divisible by ", heads, " heads");
  qkv = register_module("qkv", Linear(dim, 3 * dim));
  proj = register_module("proj", Linear(dim, dim));
}

at::Tensor TimmAttentionImpl::forward(const at::Tensor& x) {
  const auto n = x.size(0), l = x.size(1);
  auto t = qkv->forward(x).view({n, l, 3, heads, dim / heads}).permute({2, 0, 3, 1, 4});
  auto out = at::scaled_dot_product_attention(t[0], t[1], t[2]);
  return proj->forward(out.transpose(1, 2).reshape({n, l, dim}));
}

TimmBlockImpl::TimmBlockImpl(std::int64_t dim, std::int64_t heads, double mlp_ratio, Activation act,
                             double eps) {
  norm1 = register_module("norm1", LayerNorm(dim, eps));
  attn = register_module("attn", TimmAttention(dim, heads));
  norm2 = register_module("norm2", LayerNorm(dim, eps));
  mlp = register_module("mlp", TimmMlp(dim, mlp_width(dim, mlp_ratio), act));
}

at::Tensor TimmBlockImpl::forward(const at::Tensor& x, bool /*causal*/) {
  auto y = x + attn->forward(norm1->forward(x));
  return y + mlp->forward(norm2->forward(y));
}

AttentionPoolLatentImpl::AttentionPoolLatentImpl(std::int64_t dim_, std::int64_t heads_,
                                                 double mlp_ratio, Activation act, double eps)
    : dim(dim_), heads(heads_) {
  TORCH_CHECK(dim % heads == 0, "attention pool width ", dim, " not divisible by ", heads);
  latent = register_parameter("latent", at::zeros({1, 1, dim}));
  q = register_module("q", Linear(dim, dim));
  kv = register_module("kv", Linear(dim, 2 * dim));
  proj = register_module("proj", Linear(dim, dim));
  norm = register_module("norm", LayerNorm(dim, eps));
  mlp = register_module("mlp", TimmMlp(dim, mlp_width(dim, mlp_ratio), act));
}

at::Tensor AttentionPoolLatentImpl::forward(const at::Tensor& x) {
  const auto b = x.size(0), n = x.size(1), hd = dim / heads;
  auto query = q->forward(latent.to(x.scalar_type()).expand({b, 1, dim}))
                   .view({b, 1, heads, hd})
                   .transpose(1, 2);
  auto t = kv->forward(x).view({b, n, 2, heads, hd}).permute({2, 0, 3, 1, 4});
  auto y = at::scaled_dot_product_attention(query, t[0], t[1]);  // [B, heads, 1, hd]
  y = proj->forward(y.transpose(1, 2).reshape({b, dim}));
  return y + mlp->forward(norm->forward(y));
}

// --- Trunk ---------------------------------------------------------------------------------------

TimmTrunkImpl::TimmTrunkImpl(const ModelSpec& spec)
    : pool(spec.vision_pool),
      width(spec.vision_width),
      patch_size(spec.patch_size),
      grid(spec.image_size / spec.patch_size),
      patch_dropout(spec.patch_dropout) {
  auto patch_embed = register_module("patch_embed", std::make_shared<nn::Module>());
  patch_proj = patch_embed->register_module(
      "proj", nn::Conv2d(nn::Conv2dOptions(3, width, patch_size).stride(patch_size)));
  pos_embed = register_parameter("pos_embed", at::zeros({1, grid * grid, width}));
  blocks = register_module("blocks", nn::ModuleList());
  const auto act = spec.image_activation();
  for (std::int64_t i = 0; i < spec.vision_layers; ++i)
    blocks->push_back(
        TimmBlock(width, spec.vision_heads(), spec.vision_mlp_ratio, act, spec.vision_norm_eps));
  if (pool == VisionPool::map) {
    norm = register_module("norm", LayerNorm(width, spec.vision_norm_eps));
    attn_pool = register_module(
        "attn_pool", AttentionPoolLatent(width, spec.vision_heads(), spec.vision_mlp_ratio, act,
                                         spec.vision_norm_eps));
  } else {
    norm = register_module("fc_norm", LayerNorm(width, spec.vision_norm_eps));
  }
}

at::Tensor TimmTrunkImpl::embed(const at::Tensor& images) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "images must be [B, 3, H, W], got ",
              images.sizes());
  auto x = patch_proj->forward(images);  // [B, width, g, g]
  TORCH_CHECK(x.size(2) * x.size(3) == grid * grid, "images of ", images.size(2), "x",
              images.size(3), " give ", x.size(2), "x", x.size(3), " patches; the model expects ",
              grid * patch_size, "x", grid * patch_size);
  x = x.flatten(2).transpose(1, 2) + pos_embed.to(x.scalar_type());
  if (is_training() && patch_dropout > 0.0) {
    const auto b = x.size(0), n = x.size(1);
    const auto keep = std::max<std::int64_t>(
        1, static_cast<std::int64_t>(static_cast<double>(n) * (1.0 - patch_dropout)));
    const auto idx = std::get<1>(at::randn({b, n}, x.options().dtype(at::kFloat)).topk(keep, -1));
    x = x.gather(1, idx.unsqueeze(-1).expand({b, keep, width}));
  }
  return x;
}

at::Tensor TimmTrunkImpl::forward(const at::Tensor& images) {
  auto x = embed(images);
  const bool checkpoint = grad_checkpointing && is_training() && at::GradMode::is_enabled();
  for (std::size_t i = 0; i < blocks->size(); ++i) {
    auto* blk = blocks->ptr<TimmBlockImpl>(i).get();
    x = checkpoint ? checkpointed_block(*blk, x, false) : blk->forward(x, false);
  }
  if (pool == VisionPool::map) return attn_pool->forward(norm->forward(x));
  return norm->forward(x.mean(1));
}

// --- Tower ---------------------------------------------------------------------------------------

TimmVitImpl::TimmVitImpl(const ModelSpec& spec) {
  trunk = register_module("trunk", TimmTrunk(spec));
}

at::Tensor TimmVitImpl::forward(const at::Tensor& images) {
  return trunk->forward(images);
}

void init_timm_block(Initializer& init, TimmBlockImpl& block) {
  init.layer_norm(block.norm1);
  init.timm_linear(block.attn->qkv);
  init.timm_linear(block.attn->proj);
  init.layer_norm(block.norm2);
  init.timm_linear(block.mlp->fc1);
  init.timm_linear(block.mlp->fc2);
}

void init_attention_pool(Initializer& init, AttentionPoolLatentImpl& pool) {
  init.normal(pool.latent, std::pow(static_cast<double>(pool.dim), -0.5));
  for (auto* l : {&pool.q, &pool.kv, &pool.proj}) init.timm_linear(*l);
  init.layer_norm(pool.norm);
  init.timm_linear(pool.mlp->fc1);
  init.timm_linear(pool.mlp->fc2);
}

std::vector<std::vector<at::Tensor>> timm_lock_groups(std::vector<at::Tensor> stem,
                                                      const torch::nn::ModuleList& blocks,
                                                      const LayerNorm& norm,
                                                      const AttentionPoolLatent& pool) {
  std::vector<std::vector<at::Tensor>> groups{std::move(stem)};
  for (std::size_t i = 0; i < blocks->size(); ++i) groups.push_back(blocks->ptr(i)->parameters());
  groups.push_back(norm->parameters());
  if (pool) groups.push_back(pool->parameters());
  return groups;
}

void TimmVitImpl::init_parameters(Initializer& init) {
  auto& t = *trunk;
  init.torch_default(t.patch_proj->weight);
  init.torch_default_bias(t.patch_proj->bias, t.patch_proj->weight);
  init.normal(t.pos_embed, 0.02);
  for (std::size_t i = 0; i < t.blocks->size(); ++i)
    init_timm_block(init, *t.blocks->ptr<TimmBlockImpl>(i));
  init.layer_norm(t.norm);
  if (t.attn_pool) init_attention_pool(init, *t.attn_pool);
}

std::vector<std::vector<at::Tensor>> TimmVitImpl::lock_groups() {
  auto stem = trunk->patch_proj->parameters();
  stem.push_back(trunk->pos_embed);
  return timm_lock_groups(std::move(stem), trunk->blocks, trunk->norm, trunk->attn_pool);
}

// --- Cost ----------------------------------------------------------------------------------------

ImageTowerCost timm_vit_cost(const ModelSpec& s, bool training) {
  using i64 = std::int64_t;
  const i64 d = s.vision_width;
  const i64 mlp = mlp_width(d, s.vision_mlp_ratio);
  const i64 grid = s.image_size / s.patch_size;
  const i64 patches = grid * grid;
  ImageTowerCost c;
  c.params = d * 3 * s.patch_size * s.patch_size + d            // patch_embed.proj with bias
             + patches * d                                      // pos_embed
             + s.vision_layers * block_params(d, mlp) + 2 * d;  // blocks, norm
  i64 kept = patches;
  if (training && s.patch_dropout > 0.0)
    kept =
        std::max<i64>(1, static_cast<i64>(static_cast<double>(patches) * (1.0 - s.patch_dropout)));
  const double tokens = static_cast<double>(kept), dd = static_cast<double>(d);
  c.tokens = tokens;
  c.flops =
      2.0 * static_cast<double>(patches) * 3.0 * static_cast<double>(s.patch_size * s.patch_size) *
          dd +
      static_cast<double>(s.vision_layers) * block_flops(tokens, dd, static_cast<double>(mlp));
  if (s.vision_pool == VisionPool::map) {
    // latent, q, kv, proj, norm, mlp: the block of one query over every token.
    c.params += d + (d * d + d) + (2 * d * d + 2 * d) + (d * d + d) + 2 * d + (d * mlp + mlp) +
                (mlp * d + d);
    c.flops += pooled_block_flops(tokens, dd, static_cast<double>(mlp));
  }
  return c;
}

}  // namespace clipper::model
