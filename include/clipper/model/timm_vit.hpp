#pragma once
// timm's VisionTransformer as open_clip wraps it (TimmModel, vision_cfg.timm_model_name): the
// SigLIP / SigLIP 2 image trunk. Names under `visual.`: trunk.patch_embed.proj (conv with bias),
// trunk.pos_embed [1, patches, width] (no class token), trunk.blocks.{i}.{norm1, attn.qkv,
// attn.proj, norm2, mlp.fc1, mlp.fc2}, trunk.norm, and the pool: trunk.attn_pool.{latent, q, kv,
// proj, norm, mlp.fc1, mlp.fc2} (timm's AttentionPoolLatent, "map") or trunk.fc_norm after the
// mean of the patch tokens ("avg"). open_clip's timm_proj none: the pooled width is embed_dim.
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>
#include "clipper/model/linear.hpp"

#include "clipper/model/image_tower.hpp"
#include "clipper/model/transformer.hpp"

namespace clipper::model {

class TimmMlpImpl : public torch::nn::Module {
 public:
  TimmMlpImpl(std::int64_t dim, std::int64_t hidden, Activation act);
  at::Tensor forward(const at::Tensor& x);
  Linear fc1{nullptr}, fc2{nullptr};
  Activation act;
};
TORCH_MODULE(TimmMlp);

// Self-attention with timm's names: qkv [3d, d] (rows q, k, v) and proj.
class TimmAttentionImpl : public torch::nn::Module {
 public:
  TimmAttentionImpl(std::int64_t dim, std::int64_t heads);
  at::Tensor forward(const at::Tensor& x);
  Linear qkv{nullptr}, proj{nullptr};
  std::int64_t dim, heads;
};
TORCH_MODULE(TimmAttention);

// x = x + attn(norm1(x)); x = x + mlp(norm2(x)); bidirectional.
class TimmBlockImpl : public BlockImpl {
 public:
  TimmBlockImpl(std::int64_t dim, std::int64_t heads, double mlp_ratio, Activation act, double eps);
  at::Tensor forward(const at::Tensor& x, bool causal = false) override;
  LayerNorm norm1{nullptr}, norm2{nullptr};
  TimmAttention attn{nullptr};
  TimmMlp mlp{nullptr};
};
TORCH_MODULE(TimmBlock);

// timm's AttentionPoolLatent with one latent query: the latent attends to every token (q, kv,
// proj), then x + mlp(norm(x)).
class AttentionPoolLatentImpl : public torch::nn::Module {
 public:
  AttentionPoolLatentImpl(std::int64_t dim, std::int64_t heads, double mlp_ratio, Activation act,
                          double eps);
  at::Tensor forward(const at::Tensor& x);  // [B, N, d] -> [B, d]
  at::Tensor latent;                        // [1, 1, d]
  Linear q{nullptr}, kv{nullptr}, proj{nullptr};
  LayerNorm norm{nullptr};
  TimmMlp mlp{nullptr};
  std::int64_t dim, heads;
};
TORCH_MODULE(AttentionPoolLatent);

class TimmTrunkImpl : public torch::nn::Module {
 public:
  explicit TimmTrunkImpl(const ModelSpec& spec);
  at::Tensor forward(const at::Tensor& images);
  // Patch tokens plus the positional embedding (and, in training, patch dropout): [B, kept, d].
  at::Tensor embed(const at::Tensor& images);

  torch::nn::Conv2d patch_proj{nullptr};  // trunk.patch_embed.proj
  at::Tensor pos_embed;
  torch::nn::ModuleList blocks{nullptr};
  LayerNorm norm{nullptr};  // "norm" before the map pool, "fc_norm" after the avg pool
  AttentionPoolLatent attn_pool{nullptr};
  VisionPool pool;
  std::int64_t width, patch_size, grid;
  double patch_dropout = 0.0;
  bool grad_checkpointing = false;
};
TORCH_MODULE(TimmTrunk);

class TimmVitImpl : public ImageTowerImpl {
 public:
  explicit TimmVitImpl(const ModelSpec& spec);
  at::Tensor forward(const at::Tensor& images) override;
  // timm's init ('' mode): Linear N(0, 0.02) with zero bias, pos_embed N(0, 0.02), the latent
  // N(0, width^-0.5), the patch conv PyTorch's default, LayerNorms 1 / 0.
  void init_parameters(Initializer& init) override;
  // timm's group_matcher: [patch_embed, pos_embed], each block, [norm], [attn_pool].
  std::vector<std::vector<at::Tensor>> lock_groups() override;
  void set_grad_checkpointing(bool on) override { trunk->grad_checkpointing = on; }
  void set_patch_dropout(double fraction) override { trunk->patch_dropout = fraction; }
  TimmTrunk trunk{nullptr};
};
TORCH_MODULE(TimmVit);

// The parts timm's ViT trunks share (SigLIP's TimmVit, NaflexVit): timm's init of a block (Linear
// N(0, 0.02) with zero bias, LayerNorms 1 / 0) and of the MAP head (the latent N(0, width^-0.5)),
// and timm's group_matcher: [stem], each block, [norm], [attn_pool] when there is one.
void init_timm_block(Initializer& init, TimmBlockImpl& block);
void init_attention_pool(Initializer& init, AttentionPoolLatentImpl& pool);
std::vector<std::vector<at::Tensor>> timm_lock_groups(std::vector<at::Tensor> stem,
                                                      const torch::nn::ModuleList& blocks,
                                                      const LayerNorm& norm,
                                                      const AttentionPoolLatent& pool);

// For the registry: parameters and FLOPs of a timm trunk without building it.
ImageTowerCost timm_vit_cost(const ModelSpec& spec, bool training);

}  // namespace clipper::model
