#include "clipper/model/flops.hpp"

#include <algorithm>

#include "clipper/model/coca.hpp"
#include "clipper/model/image_tower.hpp"
#include "clipper/model/transformer.hpp"
#include "tower_costs.hpp"

namespace clipper::model {

using i64 = std::int64_t;

double block_flops(double tokens, double d, double mlp) {
  const double qkv = 2.0 * tokens * d * 3.0 * d;
  const double scores = 2.0 * tokens * tokens * d;
  const double values = 2.0 * tokens * tokens * d;
  const double out = 2.0 * tokens * d * d;
  const double ffn = 2.0 * 2.0 * tokens * d * mlp;
  return qkv + scores + values + out + ffn;
}

double pooled_block_flops(double tokens, double d, double mlp) {
  const double kv = 2.0 * tokens * d * 2.0 * d;
  const double q = 2.0 * d * d;
  const double scores = 2.0 * tokens * d;
  const double values = 2.0 * tokens * d;
  const double out = 2.0 * d * d;
  const double ffn = 2.0 * 2.0 * d * mlp;
  return kv + q + scores + values + out + ffn;
}

i64 block_params(i64 d, i64 mlp) {
  return 4 * d                // ln_1, ln_2
         + 3 * d * d + 3 * d  // in_proj
         + d * d + d          // out_proj
         + d * mlp + mlp      // c_fc
         + mlp * d + d;       // c_proj
}

namespace {

double conv_flops(double out_hw, double in_c, double out_c, double k) {
  return 2.0 * out_hw * out_hw * in_c * out_c * k * k;
}

// Walks the ModifiedResNet: calls conv(out_size, in, out, k) for every convolution, bn(channels)
// for every BatchNorm, and returns the final spatial size.
template <typename Conv, typename Bn>
i64 walk_resnet(const ModelSpec& s, Conv conv, Bn bn) {
  const i64 w = s.vision_width;
  i64 size = s.image_size / 2;
  conv(size, 3, w / 2, 3);
  bn(w / 2);
  conv(size, w / 2, w / 2, 3);
  bn(w / 2);
  conv(size, w / 2, w, 3);
  bn(w);
  size /= 2;
  i64 inplanes = w;
  for (int stage = 0; stage < 4; ++stage) {
    const i64 planes = w << stage;
    for (i64 b = 0; b < s.vision_resnet_layers[stage]; ++b) {
      const i64 stride = (stage > 0 && b == 0) ? 2 : 1;
      conv(size, inplanes, planes, 1);
      bn(planes);
      conv(size, planes, planes, 3);
      bn(planes);
      const i64 out = size / stride;
      conv(out, planes, planes * 4, 1);
      bn(planes * 4);
      if (stride > 1 || inplanes != planes * 4) {
        conv(out, inplanes, planes * 4, 1);
        bn(planes * 4);
      }
      inplanes = planes * 4;
      size = out;
    }
  }
  return size;
}

}  // namespace

ImageTowerCost resnet_cost(const ModelSpec& s, bool /*training*/) {
  ImageTowerCost cost;
  double convs = 0.0;
  i64 n = 0;
  const i64 final_size = walk_resnet(
      s,
      [&](i64 hw, i64 in, i64 out, i64 k) {
        convs += conv_flops(hw, in, out, k);
        n += in * out * k * k;
      },
      [&](i64 c) { n += 2 * c; });
  const i64 ci = s.vision_width * 32;
  n += (final_size * final_size + 1) * ci  // attnpool positional embedding
       + 3 * (ci * ci + ci)                // q, k, v
       + ci * s.embed_dim + s.embed_dim;   // c_proj
  cost.params = n;
  const double c = static_cast<double>(ci);
  const double l = static_cast<double>(final_size * final_size + 1);
  const double attnpool = 2.0 * l * c * 3.0 * c + 2.0 * 2.0 * l * l * c +
                          2.0 * l * c * static_cast<double>(s.embed_dim);
  cost.flops = convs + attnpool;
  // One query: its q projection, its scores and values, its output projection.
  const double one = 2.0 * c * c + 2.0 * 2.0 * l * c + 2.0 * c * static_cast<double>(s.embed_dim);
  cost.skipped = attnpool - (2.0 * l * c * 2.0 * c + one);
  return cost;
}

ImageTowerCost openclip_vit_cost(const ModelSpec& s, bool training) {
  ImageTowerCost cost;
  const i64 di = s.vision_width;
  const i64 grid = s.image_size / s.patch_size;
  const i64 patches = grid * grid;
  const i64 mlp_i = mlp_width(di, s.vision_mlp_ratio);
  const i64 pool_dim = s.vision_attn_pool ? s.embed_dim : di;    // ln_post and proj act on it
  cost.params = di * 3 * s.patch_size * s.patch_size             // conv1
                + di + (patches + 1) * di                        // class + positional embedding
                + 2 * di + 2 * pool_dim                          // ln_pre, ln_post
                + s.vision_layers * block_params(di, mlp_i)      // blocks
                + attn_pool_params(s) + pool_dim * s.embed_dim;  // attentional pooler, proj
  i64 kept = patches;
  if (training && s.patch_dropout > 0.0)
    kept =
        std::max<i64>(1, static_cast<i64>(static_cast<double>(patches) * (1.0 - s.patch_dropout)));
  const double tokens = static_cast<double>(kept + 1);
  const double d = static_cast<double>(di), mlp = static_cast<double>(mlp_i);
  cost.tokens = static_cast<double>(patches + 1);
  cost.flops = 2.0 * static_cast<double>(patches) * 3.0 *
                   static_cast<double>(s.patch_size * s.patch_size) * d +
               static_cast<double>(s.vision_layers) * block_flops(tokens, d, mlp) +
               2.0 * d * static_cast<double>(s.embed_dim);
  if (s.vision_layers > 0)
    cost.skipped = block_flops(tokens, d, mlp) - pooled_block_flops(tokens, d, mlp);
  return cost;
}

namespace {

i64 text_projection_params(const ModelSpec& s) {
  if (s.text_proj_none) return 0;
  return s.text_width * s.embed_dim + (s.text_proj_bias ? s.embed_dim : 0);
}

}  // namespace

FlopCount count_forward_flops(const ModelSpec& s, bool training) {
  FlopCount f;
  const auto image = image_tower_cost(s, training);
  f.image = image.flops;
  f.skipped = image.skipped;
  const double tw = static_cast<double>(s.text_width);
  const double tmlp = static_cast<double>(mlp_width(s.text_width, s.text_mlp_ratio));
  const double proj = s.text_proj_none ? 0.0 : 2.0 * tw * static_cast<double>(s.embed_dim);
  f.text = static_cast<double>(s.text_layers) *
               block_flops(static_cast<double>(s.context_length), tw, tmlp) +
           proj;
  if (s.text_layers > 0) {
    const double tl = static_cast<double>(s.context_length);
    f.skipped += block_flops(tl, tw, tmlp) - pooled_block_flops(tl, tw, tmlp);
  }
  return f;
}

double forward_flops_per_sample(const ModelSpec& spec) {
  return count_forward_flops(spec).total();
}

ParamCount count_parameters(const ModelSpec& s) {
  ParamCount p;
  p.image = image_tower_cost(s, false).params;
  const i64 w = s.text_width;
  p.text = s.vocab_size * w + s.text_positions() * w + (s.text_embed_cls ? w : 0) +
           s.text_layers * block_params(w, mlp_width(w, s.text_mlp_ratio)) + 2 * w +
           text_projection_params(s);
  p.decoder = decoder_params(s);
  p.other = s.init_logit_bias ? 2 : 1;
  return p;
}

std::int64_t parameter_count(const ModelSpec& spec) {
  return count_parameters(spec).total();
}

}  // namespace clipper::model
