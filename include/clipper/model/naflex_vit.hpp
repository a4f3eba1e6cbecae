#pragma once
// timm's NaFlexVit (1.0.31) as the SigLIP 2 NaFlex image tower (vision_cfg.tower: naflex_vit):
// pictures at their own aspect ratio, as sequences of patches with (y, x) coordinates and a
// validity mask (naflex_patches.hpp). Names under `visual.trunk.` are timm's:
// embeds.proj (a Linear over a flattened patch, (row, column, channel) order, with bias),
// embeds.pos_embed [1, G, G, width] (G = vision_cfg.pos_embed_grid, resized per picture to its
// patch grid, antialiased), blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2},
// norm, and attn_pool.* (the MAP head, attending to valid tokens only), or fc_norm after the
// mean of the valid tokens (timm_pool: avg). No class token, no projection (embed_dim == width).
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "clipper/model/image_tower.hpp"
#include "clipper/model/naflex_patches.hpp"
#include "clipper/model/timm_vit.hpp"

namespace clipper::model {

// timm's Block with an attention mask over the keys: padding tokens are seen by no token.
class NaflexBlockImpl : public TimmBlockImpl {
 public:
  NaflexBlockImpl(std::int64_t dim, std::int64_t heads, double mlp_ratio, Activation act,
                  double eps)
      : TimmBlockImpl(dim, heads, mlp_ratio, act, eps), width(dim) {}
  // key_mask: bool [B, 1, 1, N] (true: attend) or a block mask [B, 1, N, N] (packed rows), or
  // undefined for no padding.
  at::Tensor forward_masked(const at::Tensor& x, const at::Tensor& key_mask);
  // For gradient checkpointing (checkpointed_block): x [B, N, width] without padding, or
  // [B, N, width + 2] with each token's segment in the last two channels (segment = 256 * c1 +
  // c2, exact in bf16; -1, -1: padding), passed through: a token attends to its segment only.
  at::Tensor forward(const at::Tensor& x, bool causal = false) override;
  // Packed pictures without rows (CUDA's variable-length flash kernel): x [T, width], the
  // pictures' tokens one after the other, picture i at [cu[i], cu[i+1]) (int32), the longest
  // `max_len` tokens.
  at::Tensor forward_varlen(const at::Tensor& x, const at::Tensor& cu, std::int64_t max_len);
  std::int64_t width;
};
TORCH_MODULE(NaflexBlock);

class NaflexTrunkImpl : public torch::nn::Module {
 public:
  explicit NaflexTrunkImpl(const ModelSpec& spec);
  // The pooled features [B, width] of a batch of patch sequences.
  at::Tensor forward(const NaflexBatch& batch);
  // Patch tokens plus each picture's resized position embedding: [B, N, width].
  at::Tensor embed(const NaflexBatch& batch);
  // The position table resized to a grid of h x w patches, flattened row-major: [h * w, width]
  // in float (the table itself when h == w == G).
  at::Tensor positions(std::int64_t h, std::int64_t w) const;
  // The blocks over padded pictures x [B, N, width] (valid [B, N]) packed several to a row
  // (naflex_pack, rows of N tokens, a block-diagonal mask; on CUDA in half precision the
  // variable-length flash kernel, no rows at all), unpacked back to [B, N, width] (padding 0).
  at::Tensor packed_blocks(const at::Tensor& x, const at::Tensor& valid);

  Linear proj{nullptr};  // trunk.embeds.proj
  at::Tensor pos_embed;  // trunk.embeds.pos_embed
  torch::nn::ModuleList blocks{nullptr};
  LayerNorm norm{nullptr};  // "norm" before the map pool, "fc_norm" after the avg pool
  AttentionPoolLatent attn_pool{nullptr};
  VisionPool pool;
  Interpolation pos_interp;
  std::int64_t width, patch_size, grid;
  double patch_dropout = 0.0;
  bool grad_checkpointing = false;
  bool packing = true;  // vision_cfg.naflex_packing: padded batches run packed (packed_blocks)
  // What the last forward did with its padding (for `clipper bench train`): the share of
  // sequence slots that were padding, as the batch came and as the blocks ran it.
  double last_padded_share = 0.0, last_run_padded_share = 0.0;
};
TORCH_MODULE(NaflexTrunk);

class NaflexVitImpl : public ImageTowerImpl {
 public:
  explicit NaflexVitImpl(const ModelSpec& spec);
  // Square (or any) pictures whose sides are multiples of the patch size, [B, 3, H, W]: cut into
  // H/p x W/p patches each (no resize, no padding) and run as forward_patches. This is what the
  // CLIP model's encode_image gives a NaFlex tower until the loader makes patch batches.
  at::Tensor forward(const at::Tensor& images) override;
  // timm's NaFlexVit.forward(patches, patch_coord, patch_valid) without a classifier: [B, width].
  at::Tensor forward_patches(const NaflexBatch& batch);
  // timm's init: Linear N(0, 0.02) (truncated at +-2) with zero bias, the fix_init rescale of
  // attn.proj and mlp.fc2 by 1/sqrt(2 (i+1)), pos_embed N(0, 0.02), the latent N(0, width^-0.5).
  void init_parameters(Initializer& init) override;
  // timm's group_matcher: [embeds], each block, [norm], [attn_pool].
  std::vector<std::vector<at::Tensor>> lock_groups() override;
  void set_grad_checkpointing(bool on) override { trunk->grad_checkpointing = on; }
  void set_patch_dropout(double fraction) override { trunk->patch_dropout = fraction; }
  NaflexTrunk trunk{nullptr};
};
TORCH_MODULE(NaflexVit);

// For the registry: parameters and FLOPs at image_size x image_size.
ImageTowerCost naflex_vit_cost(const ModelSpec& spec, bool training);

}  // namespace clipper::model
