#include "clipper/model/vision.hpp"

#include <algorithm>
#include <cmath>

#include "initializer.hpp"

namespace clipper::model {

namespace nn = torch::nn;

// --- VisionTransformer -------------------------------------------------------------------------

VisionTransformerImpl::VisionTransformerImpl(const ModelSpec& spec)
    : width(spec.vision_width),
      patch_size(spec.patch_size),
      grid(spec.image_size / spec.patch_size),
      patch_dropout(spec.patch_dropout) {
  conv1 = register_module(
      "conv1", nn::Conv2d(nn::Conv2dOptions(3, width, patch_size).stride(patch_size).bias(false)));
  const double scale = std::pow(static_cast<double>(width), -0.5);
  class_embedding = register_parameter("class_embedding", at::randn({width}) * scale);
  positional_embedding =
      register_parameter("positional_embedding", at::randn({grid * grid + 1, width}) * scale);
  ln_pre = register_module("ln_pre", LayerNorm(width));
  transformer =
      register_module("transformer", Transformer(width, spec.vision_layers, spec.vision_heads(),
                                                 spec.vision_mlp_ratio, spec.image_activation()));
  // With the attentional pooler, ln_post and proj act on its embed_dim-wide outputs.
  std::int64_t pool_dim = width;
  if (spec.vision_attn_pool) {
    attn_pool = register_module(
        "attn_pool", AttentionalPooler(spec.embed_dim, width, spec.vision_attn_pool_heads,
                                       spec.vision_attn_pool_queries));
    pool_dim = spec.embed_dim;
  }
  ln_post = register_module("ln_post", LayerNorm(pool_dim));
  proj = register_parameter("proj", at::randn({pool_dim, spec.embed_dim}) * scale);
}

at::Tensor VisionTransformerImpl::embed(const at::Tensor& images) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "images must be [B, 3, H, W], got ",
              images.sizes());
  auto x = conv1->forward(images);  // [B, width, g, g]
  TORCH_CHECK(x.size(2) * x.size(3) == grid * grid, "images of ", images.size(2), "x",
              images.size(3), " give ", x.size(2), "x", x.size(3), " patches; the model expects ",
              grid * patch_size, "x", grid * patch_size);
  const auto b = x.size(0);
  x = x.flatten(2).transpose(1, 2);  // [B, g*g, width]
  auto cls = class_embedding.to(x.scalar_type()).view({1, 1, width}).expand({b, 1, width});
  x = at::cat({cls, x}, 1) + positional_embedding.to(x.scalar_type());
  if (is_training() && patch_dropout > 0.0) {
    const auto n = x.size(1) - 1;
    const auto keep = std::max<std::int64_t>(
        1, static_cast<std::int64_t>(static_cast<double>(n) * (1.0 - patch_dropout)));
    const auto idx = std::get<1>(at::randn({b, n}, x.options().dtype(at::kFloat)).topk(keep, -1));
    auto patches = x.narrow(1, 1, n).gather(1, idx.unsqueeze(-1).expand({b, keep, width}));
    x = at::cat({x.narrow(1, 0, 1), patches}, 1);
  }
  return x;
}

at::Tensor VisionTransformerImpl::forward(const at::Tensor& images) {
  if (attn_pool) return forward_with_tokens(images).first;
  auto x = ln_pre->forward(embed(images));
  // Class-token pooling: the last block computes the class token only.
  const auto cls = at::zeros({x.size(0)}, x.options().dtype(at::kLong));
  auto pooled = ln_post->forward(transformer->forward_token(x, cls, /*causal=*/false));
  return at::matmul(pooled, proj.to(pooled.scalar_type()));
}

std::pair<at::Tensor, at::Tensor> VisionTransformerImpl::forward_with_tokens(
    const at::Tensor& images) {
  auto x = transformer->forward(ln_pre->forward(embed(images)));
  if (attn_pool) x = attn_pool->forward(x);
  x = ln_post->forward(x);
  const auto n = x.size(1);
  auto pooled = at::matmul(x.select(1, 0), proj.to(x.scalar_type()));
  return {pooled, x.narrow(1, 1, n - 1)};
}

void VisionTransformerImpl::init_parameters(Initializer& init) {
  init.torch_default(conv1->weight);
  const double scale = std::pow(static_cast<double>(width), -0.5);
  init.normal(class_embedding, scale);
  init.normal(positional_embedding, scale);
  init.layer_norm(ln_pre);
  for (std::int64_t i = 0; i < transformer->layers; ++i) {
    auto blk = transformer->block(i);
    const auto d = blk->attn->dim;
    init.layer_norm(blk->ln_1);
    init.uniform(blk->attn->in_proj_weight, std::sqrt(6.0 / static_cast<double>(d + 3 * d)));
    init.constant(blk->attn->in_proj_bias, 0.0);
    init.torch_default(blk->attn->out_proj->weight);
    init.constant(blk->attn->out_proj->bias, 0.0);
    init.layer_norm(blk->ln_2);
    init.linear_default(blk->mlp->c_fc);
    init.linear_default(blk->mlp->c_proj);
  }
  if (attn_pool) attn_pool->init_parameters(init);
  init.layer_norm(ln_post);
  init.normal(proj, scale);
}

std::vector<std::vector<at::Tensor>> VisionTransformerImpl::lock_groups() {
  std::vector<std::vector<at::Tensor>> groups;
  auto first = conv1->parameters();
  first.push_back(class_embedding);
  first.push_back(positional_embedding);
  for (const auto& p : ln_pre->parameters()) first.push_back(p);
  groups.push_back(first);
  for (std::int64_t i = 0; i + 1 < transformer->layers; ++i)
    groups.push_back(transformer->block(i)->parameters());
  auto last = transformer->block(transformer->layers - 1)->parameters();
  // open_clip's groups leave the attentional pooler out (locked whatever is unlocked); clipper
  // keeps it with the last block.
  if (attn_pool)
    for (const auto& p : attn_pool->parameters()) last.push_back(p);
  for (const auto& p : ln_post->parameters()) last.push_back(p);
  groups.push_back(last);
  groups.push_back({proj});
  return groups;
}

// --- ModifiedResNet ----------------------------------------------------------------------------

namespace {
nn::Conv2d conv(std::int64_t in, std::int64_t out, std::int64_t k, std::int64_t stride = 1) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2).bias(false));
}
}  // namespace

DownsampleImpl::DownsampleImpl(std::int64_t in, std::int64_t out, std::int64_t stride_)
    : stride(stride_) {
  conv = register_module("0", nn::Conv2d(nn::Conv2dOptions(in, out, 1).bias(false)));
  bn = register_module("1", nn::BatchNorm2d(out));
}

at::Tensor DownsampleImpl::forward(const at::Tensor& x) {
  auto y = stride > 1 ? at::avg_pool2d(x, {stride, stride}) : x;
  return bn->forward(conv->forward(y));
}

BottleneckImpl::BottleneckImpl(std::int64_t inplanes, std::int64_t planes, std::int64_t stride_)
    : stride(stride_) {
  conv1 = register_module("conv1", conv(inplanes, planes, 1));
  bn1 = register_module("bn1", nn::BatchNorm2d(planes));
  conv2 = register_module("conv2", conv(planes, planes, 3));
  bn2 = register_module("bn2", nn::BatchNorm2d(planes));
  conv3 = register_module("conv3", conv(planes, planes * kExpansion, 1));
  bn3 = register_module("bn3", nn::BatchNorm2d(planes * kExpansion));
  if (stride > 1 || inplanes != planes * kExpansion)
    downsample = register_module("downsample", Downsample(inplanes, planes * kExpansion, stride));
}

at::Tensor BottleneckImpl::forward(const at::Tensor& x) {
  auto out = at::relu(bn1->forward(conv1->forward(x)));
  out = at::relu(bn2->forward(conv2->forward(out)));
  if (stride > 1) out = at::avg_pool2d(out, {stride, stride});
  out = bn3->forward(conv3->forward(out));
  out = out + (downsample ? downsample->forward(x) : x);
  return at::relu(out);
}

AttentionPool2dImpl::AttentionPool2dImpl(std::int64_t spatial, std::int64_t dim,
                                         std::int64_t heads_, std::int64_t output_dim)
    : heads(heads_) {
  TORCH_CHECK(dim % heads == 0, "attention pool width ", dim, " not divisible by ", heads);
  positional_embedding =
      register_parameter("positional_embedding", at::randn({spatial * spatial + 1, dim}) /
                                                     std::sqrt(static_cast<double>(dim)));
  k_proj = register_module("k_proj", Linear(dim, dim));
  q_proj = register_module("q_proj", Linear(dim, dim));
  v_proj = register_module("v_proj", Linear(dim, dim));
  c_proj = register_module("c_proj", Linear(dim, output_dim));
}

at::Tensor AttentionPool2dImpl::forward(const at::Tensor& x_in) {
  const auto b = x_in.size(0), c = x_in.size(1);
  auto x = x_in.flatten(2).transpose(1, 2);  // [B, HW, C]
  TORCH_CHECK(x.size(1) + 1 == positional_embedding.size(0), "attention pool expects ",
              positional_embedding.size(0) - 1, " positions, got ", x.size(1),
              " (wrong image size?)");
  x = at::cat({x.mean(1, /*keepdim=*/true), x}, 1) + positional_embedding.to(x.scalar_type());
  const auto l = x.size(1), hd = c / heads;
  // Only the first (mean) token's output is used, so only its query is computed.
  auto q = q_proj->forward(x.narrow(1, 0, 1)).view({b, 1, heads, hd}).transpose(1, 2);
  auto k = k_proj->forward(x).view({b, l, heads, hd}).transpose(1, 2);
  auto v = v_proj->forward(x).view({b, l, heads, hd}).transpose(1, 2);
  auto out = at::scaled_dot_product_attention(q, k, v);  // [B, heads, 1, hd]
  return c_proj->forward(out.transpose(1, 2).reshape({b, c}));
}

ModifiedResNetImpl::ModifiedResNetImpl(const ModelSpec& spec) {
  const auto w = spec.vision_width;
  conv1 = register_module("conv1", conv(3, w / 2, 3, 2));
  bn1 = register_module("bn1", nn::BatchNorm2d(w / 2));
  conv2 = register_module("conv2", conv(w / 2, w / 2, 3));
  bn2 = register_module("bn2", nn::BatchNorm2d(w / 2));
  conv3 = register_module("conv3", conv(w / 2, w, 3));
  bn3 = register_module("bn3", nn::BatchNorm2d(w));
  std::int64_t inplanes = w;
  auto make_layer = [&](std::int64_t planes, std::int64_t blocks, std::int64_t stride) {
    nn::ModuleList list;
    list->push_back(Bottleneck(inplanes, planes, stride));
    inplanes = planes * BottleneckImpl::kExpansion;
    for (std::int64_t i = 1; i < blocks; ++i) list->push_back(Bottleneck(inplanes, planes, 1));
    return list;
  };
  const auto& n = spec.vision_resnet_layers;
  layer1 = register_module("layer1", make_layer(w, n.at(0), 1));
  layer2 = register_module("layer2", make_layer(w * 2, n.at(1), 2));
  layer3 = register_module("layer3", make_layer(w * 4, n.at(2), 2));
  layer4 = register_module("layer4", make_layer(w * 8, n.at(3), 2));
  attnpool = register_module("attnpool", AttentionPool2d(spec.image_size / 32, w * 32,
                                                         spec.vision_heads(), spec.embed_dim));
}

at::Tensor ModifiedResNetImpl::stem(const at::Tensor& images) {
  auto x = at::relu(bn1->forward(conv1->forward(images)));
  x = at::relu(bn2->forward(conv2->forward(x)));
  x = at::relu(bn3->forward(conv3->forward(x)));
  return at::avg_pool2d(x, {2, 2});
}

at::Tensor ModifiedResNetImpl::forward(const at::Tensor& images) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "images must be [B, 3, H, W], got ",
              images.sizes());
  auto x = stem(images);
  for (auto* layer : {&layer1, &layer2, &layer3, &layer4})
    for (std::size_t i = 0; i < (*layer)->size(); ++i)
      x = (*layer)->ptr<BottleneckImpl>(i)->forward(x);
  return attnpool->forward(x);
}

void ModifiedResNetImpl::init_parameters(Initializer& init) {
  for (auto* c : {&conv1, &conv2, &conv3}) init.torch_default((*c)->weight);
  for (auto* b : {&bn1, &bn2, &bn3}) init.batch_norm(*b);
  for (auto* layer : {&layer1, &layer2, &layer3, &layer4})
    for (std::size_t i = 0; i < (*layer)->size(); ++i) {
      auto blk = (*layer)->ptr<BottleneckImpl>(i);
      init.torch_default(blk->conv1->weight);
      init.batch_norm(blk->bn1);
      init.torch_default(blk->conv2->weight);
      init.batch_norm(blk->bn2);
      init.torch_default(blk->conv3->weight);
      init.batch_norm(blk->bn3, 0.0);
      if (blk->downsample) {
        init.torch_default(blk->downsample->conv->weight);
        init.batch_norm(blk->downsample->bn);
      }
    }
  auto& p = *attnpool;
  const double std = std::pow(static_cast<double>(p.c_proj->weight.size(1)), -0.5);
  init.normal(p.positional_embedding,
              std::pow(static_cast<double>(p.k_proj->weight.size(1)), -0.5));
  for (auto* l : {&p.q_proj, &p.k_proj, &p.v_proj, &p.c_proj}) {
    init.linear_default(*l);  // biases: PyTorch's default
    init.normal((*l)->weight, std);
  }
}

std::vector<std::vector<at::Tensor>> ModifiedResNetImpl::lock_groups() {
  std::vector<std::vector<at::Tensor>> groups;
  std::vector<at::Tensor> stem;
  for (const nn::Module* m : std::vector<const nn::Module*>{conv1.get(), bn1.get(), conv2.get(),
                                                            bn2.get(), conv3.get(), bn3.get()})
    for (const auto& p : m->parameters()) stem.push_back(p);
  groups.push_back(stem);
  for (auto* layer : {&layer1, &layer2, &layer3, &layer4}) groups.push_back((*layer)->parameters());
  groups.push_back(attnpool->parameters());
  return groups;
}

void ModifiedResNetImpl::train(bool on) {
  nn::Module::train(on);
  if (on && freeze_bn_stats)
    for (auto& m : modules(/*include_self=*/false))
      if (m->as<nn::BatchNorm2d>()) m->eval();
}

void ModifiedResNetImpl::set_freeze_bn_stats(bool freeze) {
  freeze_bn_stats = freeze;
  train(is_training());
}

}  // namespace clipper::model
