#include "clipper/model/naflex_vit.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "clipper/core/error.hpp"
#include "initializer.hpp"
#include "tower_costs.hpp"

namespace clipper::model {

namespace nn = torch::nn;
using core::InputError;

namespace {

std::optional<at::Tensor> as_mask(const at::Tensor& key_mask) {
  if (!key_mask.defined()) return std::nullopt;
  return key_mask;
}

// timm's Attention with a key mask: q, k, v from one qkv Linear, proj after.
at::Tensor masked_attention(TimmAttentionImpl& a, const at::Tensor& x, const at::Tensor& key_mask) {
  const auto n = x.size(0), l = x.size(1);
  auto t = a.qkv->forward(x).view({n, l, 3, a.heads, a.dim / a.heads}).permute({2, 0, 3, 1, 4});
  auto out = at::scaled_dot_product_attention(t[0], t[1], t[2], as_mask(key_mask));
  return a.proj->forward(out.transpose(1, 2).reshape({n, l, a.dim}));
}

// timm's AttentionPoolLatent with a key mask: the latent attends to the valid tokens only.
at::Tensor masked_pool(AttentionPoolLatentImpl& p, const at::Tensor& x,
                       const at::Tensor& key_mask) {
  const auto b = x.size(0), n = x.size(1), hd = p.dim / p.heads;
  auto query = p.q->forward(p.latent.to(x.scalar_type()).expand({b, 1, p.dim}))
                   .view({b, 1, p.heads, hd})
                   .transpose(1, 2);
  auto t = p.kv->forward(x).view({b, n, 2, p.heads, hd}).permute({2, 0, 3, 1, 4});
  auto y = at::scaled_dot_product_attention(query, t[0], t[1], as_mask(key_mask));
  y = p.proj->forward(y.transpose(1, 2).reshape({b, p.dim}));
  return y + p.mlp->forward(p.norm->forward(y));
}

// What embed learns of a batch on the host (one copy): each picture's grid and valid count.
struct BatchShape {
  std::vector<std::pair<std::int64_t, std::int64_t>> grids;  // (h, w): max coordinate + 1
  bool padded = false;
};

void check_batch(const NaflexBatch& in, std::int64_t patch_dim) {
  const auto& p = in.patches;
  if (!p.defined() || p.dim() != 3 || p.size(2) != patch_dim)
    throw InputError("NaFlex: patches must be [B, N, " + std::to_string(patch_dim) +
                     "] (patch_size^2 * 3 values each)");
  const auto b = p.size(0), n = p.size(1);
  if (!in.coord.defined() || in.coord.dim() != 3 || in.coord.size(0) != b ||
      in.coord.size(1) != n || in.coord.size(2) != 2 || in.coord.is_floating_point())
    throw InputError("NaFlex: patch coordinates must be integers [B, N, 2] matching the patches");
  if (!in.valid.defined() || in.valid.dim() != 2 || in.valid.size(0) != b || in.valid.size(1) != n)
    throw InputError("NaFlex: the validity mask must be [B, N] matching the patches");
  if (b == 0 || n == 0) throw InputError("NaFlex: an empty batch of patches");
}

BatchShape batch_shape(const at::Tensor& coord, const at::Tensor& valid) {
  const auto b = coord.size(0);
  auto c = coord.to(at::kLong).masked_fill(~valid.unsqueeze(-1), 0);
  auto stats =
      at::cat({c.amax(1) + 1, c.amin(1).amin(1, true), valid.sum(1, false, at::kLong).unsqueeze(1)},
              1)
          .to(at::kCPU);
  auto s = stats.accessor<std::int64_t, 2>();
  BatchShape out;
  for (std::int64_t i = 0; i < b; ++i) {
    if (s[i][3] == 0)
      throw InputError("NaFlex: picture " + std::to_string(i) + " has no valid patch");
    if (s[i][2] < 0)
      throw InputError("NaFlex: picture " + std::to_string(i) + " has a negative patch coordinate");
    out.grids.emplace_back(s[i][0], s[i][1]);
    out.padded = out.padded || s[i][3] < coord.size(1);
  }
  return out;
}

// The two segment channels (256 * c1 + c2; -1, -1: padding) of a token, and back.
at::Tensor segment_channels(const at::Tensor& seg, at::ScalarType dtype) {
  const auto hi = at::where(seg.ge(0), seg.div(256, "floor"), at::full_like(seg, -1));
  const auto lo = at::where(seg.ge(0), seg.remainder(256), at::full_like(seg, -1));
  return at::stack({hi, lo}, -1).to(dtype);
}
at::Tensor segment_ids(const at::Tensor& channels) {
  const auto c = channels.to(at::kFloat).round().to(at::kLong);
  return c.select(-1, 0) * 256 + c.select(-1, 1);
}
// Token i attends to token j when both are of one segment: [B, 1, N, N].
at::Tensor block_mask(const at::Tensor& seg) {
  return seg.unsqueeze(2).eq(seg.unsqueeze(1)).unsqueeze(1);
}

}  // namespace

// --- Block ---------------------------------------------------------------------------------------

at::Tensor NaflexBlockImpl::forward_masked(const at::Tensor& x, const at::Tensor& key_mask) {
  auto y = x + masked_attention(*attn, norm1->forward(x), key_mask);
  return y + mlp->forward(norm2->forward(y));
}

at::Tensor NaflexBlockImpl::forward(const at::Tensor& x, bool /*causal*/) {
  if (x.size(-1) == width) return forward_masked(x, {});
  const auto seg = segment_ids(x.narrow(-1, width, 2));
  auto y = forward_masked(x.narrow(-1, 0, width).contiguous(), block_mask(seg));
  return at::cat({y, x.narrow(-1, width, 2)}, -1);
}

at::Tensor NaflexBlockImpl::forward_varlen(const at::Tensor& x, const at::Tensor& cu,
                                           std::int64_t max_len) {
  const auto t = x.size(0), hd = width / attn->heads;
  auto qkv = attn->qkv->forward(norm1->forward(x)).view({t, 3, attn->heads, hd});
  auto out = std::get<0>(at::_flash_attention_forward(
      qkv.select(1, 0), qkv.select(1, 1), qkv.select(1, 2), cu, cu, max_len, max_len,
      /*dropout_p=*/0.0, /*is_causal=*/false, /*return_debug_mask=*/false));
  auto y = x + attn->proj->forward(out.reshape({t, width}));
  return y + mlp->forward(norm2->forward(y));
}

// --- Trunk ---------------------------------------------------------------------------------------

NaflexTrunkImpl::NaflexTrunkImpl(const ModelSpec& spec)
    : pool(spec.vision_pool),
      pos_interp(spec.pos_embed_interp),
      width(spec.vision_width),
      patch_size(spec.patch_size),
      grid(spec.pos_embed_grid),
      patch_dropout(spec.patch_dropout),
      packing(spec.naflex_packing) {
  auto embeds = register_module("embeds", std::make_shared<nn::Module>());
  proj = embeds->register_module("proj", Linear(patch_size * patch_size * 3, width));
  pos_embed = embeds->register_parameter("pos_embed", at::zeros({1, grid, grid, width}));
  blocks = register_module("blocks", nn::ModuleList());
  const auto act = spec.image_activation();
  for (std::int64_t i = 0; i < spec.vision_layers; ++i)
    blocks->push_back(
        NaflexBlock(width, spec.vision_heads(), spec.vision_mlp_ratio, act, spec.vision_norm_eps));
  if (pool == VisionPool::map) {
    norm = register_module("norm", LayerNorm(width, spec.vision_norm_eps));
    attn_pool = register_module(
        "attn_pool", AttentionPoolLatent(width, spec.vision_heads(), spec.vision_mlp_ratio, act,
                                         spec.vision_norm_eps));
  } else {
    norm = register_module("fc_norm", LayerNorm(width, spec.vision_norm_eps));
  }
}

at::Tensor NaflexTrunkImpl::positions(std::int64_t h, std::int64_t w) const {
  if (h == grid && w == grid) return pos_embed.reshape({grid * grid, width}).to(at::kFloat);
  auto nchw = pos_embed.permute({0, 3, 1, 2}).to(at::kFloat);
  // timm resizes with antialias on, which upsampling leaves as plain interpolation.
  auto r = pos_interp == Interpolation::bicubic
               ? at::_upsample_bicubic2d_aa(nchw, {h, w}, /*align_corners=*/false)
               : at::_upsample_bilinear2d_aa(nchw, {h, w}, /*align_corners=*/false);
  return r.flatten(2).transpose(1, 2).reshape({h * w, width});
}

namespace {

// Each token's position embedding: its picture's table (resized once per distinct grid) at
// row y * w + x. [B, N, width] in float.
at::Tensor token_positions(const NaflexTrunkImpl& t, const at::Tensor& coord,
                           const BatchShape& shape) {
  const auto b = coord.size(0), n = coord.size(1);
  std::map<std::pair<std::int64_t, std::int64_t>, std::int64_t> offset;
  std::vector<at::Tensor> tables;
  std::vector<std::int64_t> start, row;
  std::int64_t total = 0;
  for (const auto& hw : shape.grids) {
    auto it = offset.find(hw);
    if (it == offset.end()) {
      it = offset.emplace(hw, total).first;
      tables.push_back(t.positions(hw.first, hw.second));
      total += hw.first * hw.second;
    }
    start.push_back(it->second);
    row.push_back(hw.second);
  }
  const auto table = tables.size() == 1 ? tables.front() : at::cat(tables);
  const auto opts = at::TensorOptions().dtype(at::kLong);
  const auto first = at::tensor(start, opts).to(coord.device()).unsqueeze(1);
  const auto w = at::tensor(row, opts).to(coord.device()).unsqueeze(1);
  const auto c = coord.to(at::kLong).clamp_min(0);
  const auto idx = first + c.select(2, 0) * w + c.select(2, 1);
  return table.index_select(0, idx.reshape({-1}).clamp_max(total - 1)).view({b, n, t.width});
}

}  // namespace

at::Tensor NaflexTrunkImpl::embed(const NaflexBatch& in) {
  check_batch(in, patch_size * patch_size * 3);
  const auto valid = in.valid.to(at::kBool);
  const auto shape = batch_shape(in.coord, valid);
  const auto x = proj->forward(in.patches);
  const auto pos = token_positions(*this, in.coord.masked_fill(~valid.unsqueeze(-1), 0), shape);
  return x + pos.to(x.scalar_type());
}

namespace {

// Where each picture's valid tokens go when packed: src[slot] the token (b * N + j) a row slot
// holds (B * N: none, a zero row), seg[slot] its picture (-1: padding), dst[b * N + j] the slot
// of a token (rows * N: none); order/cu: the tokens picture by picture for the varlen kernel.
struct PackIndex {
  NaflexPacking plan;
  std::vector<std::int64_t> src, seg, dst, order;
  std::vector<std::int32_t> cu{0};
  std::int64_t longest = 0;
};

PackIndex pack_index(const at::Tensor& valid) {
  const auto b = valid.size(0), n = valid.size(1);
  const auto v = valid.to(at::kCPU).contiguous();
  const auto* vp = v.data_ptr<bool>();
  std::vector<std::int64_t> lengths(static_cast<std::size_t>(b), 0);
  for (std::int64_t i = 0; i < b * n; ++i) lengths[static_cast<std::size_t>(i / n)] += vp[i];
  PackIndex p;
  p.plan = naflex_pack(lengths, n);
  const auto slots = p.plan.rows * n;
  p.src.assign(static_cast<std::size_t>(slots), b * n);
  p.seg.assign(static_cast<std::size_t>(slots), -1);
  p.dst.assign(static_cast<std::size_t>(b * n), slots);
  for (std::int64_t i = 0; i < b; ++i) {
    const auto u = static_cast<std::size_t>(i);
    std::int64_t k = 0;
    for (std::int64_t j = 0; j < n; ++j) {
      if (!vp[i * n + j]) continue;
      const auto slot = p.plan.row[u] * n + p.plan.offset[u] + k++;
      p.src[static_cast<std::size_t>(slot)] = i * n + j;
      p.seg[static_cast<std::size_t>(slot)] = i;
      p.dst[static_cast<std::size_t>(i * n + j)] = slot;
      p.order.push_back(i * n + j);
    }
    p.cu.push_back(p.cu.back() + static_cast<std::int32_t>(k));
    p.longest = std::max(p.longest, k);
  }
  return p;
}

at::Tensor long_tensor(const std::vector<std::int64_t>& v, at::Device device) {
  return at::tensor(v, at::TensorOptions().dtype(at::kLong)).to(device);
}

}  // namespace

at::Tensor NaflexTrunkImpl::packed_blocks(const at::Tensor& x, const at::Tensor& valid) {
  const auto b = x.size(0), n = x.size(1), d = width;
  const auto p = pack_index(valid);
  const bool checkpoint = grad_checkpointing && is_training() && at::GradMode::is_enabled();
  const auto hd = d / blocks->ptr<NaflexBlockImpl>(0)->attn->heads;
  const bool varlen = x.is_cuda() && !checkpoint && hd % 8 == 0 && hd <= 256 &&
                      (x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16);
  if (varlen) {
    // No rows: the tokens back to back, each picture its own variable-length sequence.
    last_run_padded_share = 0.0;
    const auto order = long_tensor(p.order, x.device());
    const auto cu = at::tensor(p.cu, at::TensorOptions().dtype(at::kInt)).to(x.device());
    auto t = x.reshape({b * n, d}).index_select(0, order);
    for (std::size_t i = 0; i < blocks->size(); ++i)
      t = blocks->ptr<NaflexBlockImpl>(i)->forward_varlen(t, cu, p.longest);
    return at::zeros({b * n, d}, t.options()).index_copy(0, order, t).view({b, n, d});
  }
  last_run_padded_share = p.plan.padded_share();
  const auto rows = p.plan.rows, slots = rows * n;
  auto xp = at::cat({x.reshape({b * n, d}), at::zeros({1, d}, x.options())})
                .index_select(0, long_tensor(p.src, x.device()))
                .view({rows, n, d});
  const auto seg = long_tensor(p.seg, x.device()).view({rows, n});
  const auto mask = block_mask(seg);
  if (checkpoint) xp = at::cat({xp, segment_channels(seg, xp.scalar_type())}, -1);
  for (std::size_t i = 0; i < blocks->size(); ++i) {
    auto* blk = blocks->ptr<NaflexBlockImpl>(i).get();
    xp = checkpoint ? checkpointed_block(*blk, xp, false) : blk->forward_masked(xp, mask);
  }
  if (checkpoint) xp = xp.narrow(-1, 0, d);
  return at::cat({xp.reshape({slots, d}), at::zeros({1, d}, xp.options())})
      .index_select(0, long_tensor(p.dst, x.device()))
      .view({b, n, d});
}

at::Tensor NaflexTrunkImpl::forward(const NaflexBatch& in) {
  auto x = embed(in);
  auto valid = in.valid.to(at::kBool);
  const auto b = x.size(0);
  if (is_training() && patch_dropout > 0.0) {
    // timm's PatchDropoutWithIndices, keeping valid tokens before padding.
    const auto n = x.size(1);
    const auto keep = std::max<std::int64_t>(
        1, static_cast<std::int64_t>(static_cast<double>(n) * (1.0 - patch_dropout)));
    auto noise = at::rand({b, n}, x.options().dtype(at::kFloat)).masked_fill(~valid, -1.0);
    const auto idx = std::get<1>(noise.topk(keep, -1));
    x = x.gather(1, idx.unsqueeze(-1).expand({b, keep, width}));
    valid = valid.gather(1, idx);
  }
  const auto n = x.size(1);
  // Padding: zeroed (whatever the caller left there) and hidden from every query.
  const auto valid_count = valid.sum().item<std::int64_t>();
  const bool padded = valid_count < b * n;
  last_padded_share = last_run_padded_share =
      1.0 - static_cast<double>(valid_count) / static_cast<double>(b * n);
  at::Tensor mask;
  if (padded) {
    x = x.masked_fill(~valid.unsqueeze(-1), 0.0);
    mask = valid.view({b, 1, 1, n});
  }
  if (padded && packing) {
    x = packed_blocks(x, valid);
  } else {
    const bool checkpoint = grad_checkpointing && is_training() && at::GradMode::is_enabled();
    // checkpointed_block passes one tensor: the segments (valid 0, padding -1) ride along.
    if (checkpoint && padded)
      x = at::cat({x, segment_channels(valid.to(at::kLong) - 1, x.scalar_type())}, -1);
    for (std::size_t i = 0; i < blocks->size(); ++i) {
      auto* blk = blocks->ptr<NaflexBlockImpl>(i).get();
      x = checkpoint ? checkpointed_block(*blk, x, false) : blk->forward_masked(x, mask);
    }
    if (checkpoint && padded) x = x.narrow(-1, 0, width);
  }
  if (pool == VisionPool::map) return masked_pool(*attn_pool, norm->forward(x), mask);
  if (!padded) return norm->forward(x.mean(1));
  const auto v = valid.to(x.scalar_type());
  return norm->forward((x * v.unsqueeze(-1)).sum(1) / v.sum(1, true).clamp_min(1.0));
}

// --- Tower ---------------------------------------------------------------------------------------

NaflexVitImpl::NaflexVitImpl(const ModelSpec& spec) {
  trunk = register_module("trunk", NaflexTrunk(spec));
}

at::Tensor NaflexVitImpl::forward(const at::Tensor& images) {
  return trunk->forward(naflex_patchify_batch(images, trunk->patch_size));
}

at::Tensor NaflexVitImpl::forward_patches(const NaflexBatch& batch) {
  return trunk->forward(batch);
}

void NaflexVitImpl::init_parameters(Initializer& init) {
  auto& t = *trunk;
  init.timm_linear(t.proj);
  init.normal(t.pos_embed, 0.02);
  for (std::size_t i = 0; i < t.blocks->size(); ++i) {
    auto blk = t.blocks->ptr<NaflexBlockImpl>(i);
    init_timm_block(init, *blk);
    // timm's fix_init (NaFlexVitCfg.fix_init, on): deeper residual outputs start smaller.
    at::NoGradGuard g;
    const double scale = 1.0 / std::sqrt(2.0 * static_cast<double>(i + 1));
    blk->attn->proj->weight.mul_(scale);
    blk->mlp->fc2->weight.mul_(scale);
  }
  init.layer_norm(t.norm);
  if (t.attn_pool) init_attention_pool(init, *t.attn_pool);
}

std::vector<std::vector<at::Tensor>> NaflexVitImpl::lock_groups() {
  auto stem = trunk->proj->parameters();
  stem.push_back(trunk->pos_embed);
  return timm_lock_groups(std::move(stem), trunk->blocks, trunk->norm, trunk->attn_pool);
}

// --- Cost ----------------------------------------------------------------------------------------

ImageTowerCost naflex_vit_cost(const ModelSpec& s, bool training) {
  // timm's trunk at image_size: the Linear patch embedding has the conv's weights and work; the
  // position table is G x G instead of one row per patch.
  auto c = timm_vit_cost(s, training);
  const auto patches = (s.image_size / s.patch_size) * (s.image_size / s.patch_size);
  c.params += (s.pos_embed_grid * s.pos_embed_grid - patches) * s.vision_width;
  return c;
}

}  // namespace clipper::model
