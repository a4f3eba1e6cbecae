#include "clipper/model/clip.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/modules/batchnorm.h>

#include <cmath>
#include <functional>

#include "clipper/core/error.hpp"

namespace clipper::model {

namespace nn = torch::nn;

ClipImpl::ClipImpl(const ModelSpec& spec)
    : spec_(spec), act_(spec.quick_gelu ? Activation::quick_gelu : Activation::gelu) {
  spec_.validate();
  if (spec_.is_resnet())
    visual_resnet = register_module("visual", ModifiedResNet(spec_));
  else
    visual_vit = register_module("visual", VisionTransformer(spec_, act_));
  transformer =
      register_module("transformer", Transformer(spec_.text_width, spec_.text_layers,
                                                 spec_.text_heads, spec_.text_mlp_ratio, act_));
  token_embedding =
      register_module("token_embedding", nn::Embedding(spec_.vocab_size, spec_.text_width));
  positional_embedding = register_parameter("positional_embedding",
                                            at::zeros({spec_.context_length, spec_.text_width}));
  ln_final = register_module("ln_final", LayerNorm(spec_.text_width));
  text_projection =
      register_parameter("text_projection", at::zeros({spec_.text_width, spec_.embed_dim}));
  logit_scale = register_parameter("logit_scale", at::scalar_tensor(spec_.init_logit_scale));
  if (spec_.init_logit_bias)
    logit_bias = register_parameter("logit_bias", at::scalar_tensor(*spec_.init_logit_bias));
}

at::Tensor ClipImpl::encode_image(const at::Tensor& images, bool normalize) {
  auto f = visual_vit ? visual_vit->forward(images) : visual_resnet->forward(images);
  return normalize ? f / f.norm(2, -1, true).clamp_min(1e-12) : f;
}

at::Tensor ClipImpl::encode_text(const at::Tensor& tokens, bool normalize) {
  TORCH_CHECK(tokens.dim() == 2, "tokens must be [B, L], got ", tokens.sizes());
  TORCH_CHECK(tokens.scalar_type() == at::kLong, "tokens must be int64, got ",
              tokens.scalar_type());
  const auto b = tokens.size(0), l = tokens.size(1);
  TORCH_CHECK(l <= spec_.context_length, "token rows of length ", l,
              " exceed the model's context_length ", spec_.context_length);
  auto x = token_embedding->forward(tokens) + positional_embedding.narrow(0, 0, l);
  // End-of-text pooling; with the CLIP tokenizer the end-of-text id is the largest id in a row.
  at::Tensor where;
  switch (spec_.text_pool) {
    case model::TextPool::argmax:
      where = tokens.argmax(-1);
      break;
    case model::TextPool::eos:
      where = tokens.eq(spec_.text_eos_id).to(at::kInt).argmax(-1);
      break;
    case model::TextPool::first:
      where = at::zeros({b}, tokens.options());
      break;
    case model::TextPool::last:
      where = at::full({b}, l - 1, tokens.options());
      break;
  }
  // The last block computes the pooled token only; ln_final is per token, so it comes after.
  auto pooled = ln_final->forward(transformer->forward_token(x, where, /*causal=*/true));
  auto f = at::matmul(pooled, text_projection.to(pooled.scalar_type()));
  return normalize ? f / f.norm(2, -1, true).clamp_min(1e-12) : f;
}

ClipOutput ClipImpl::forward(const at::Tensor& images, const at::Tensor& tokens) {
  ClipOutput out;
  out.image_features = encode_image(images, true);
  out.text_features = encode_text(tokens, true);
  out.logit_scale = logit_scale.exp();
  if (logit_bias.defined()) out.logit_bias = logit_bias;
  return out;
}

// --- Initialization ----------------------------------------------------------------------------

namespace {

// Fills parameters from one CPU generator, whatever device they live on.
class Initializer {
 public:
  explicit Initializer(std::uint64_t seed) : gen_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}
  void normal(const at::Tensor& t, double std) {
    fill(t, [&](at::Tensor& c) { c.normal_(0.0, std, gen_); });
  }
  void uniform(const at::Tensor& t, double bound) {
    fill(t, [&](at::Tensor& c) { c.uniform_(-bound, bound, gen_); });
  }
  void constant(const at::Tensor& t, double v) {
    at::NoGradGuard g;
    t.fill_(v);
  }
  // PyTorch's default for Linear / Conv weights: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
  void torch_default(const at::Tensor& weight) {
    uniform(weight, 1.0 / std::sqrt(static_cast<double>(weight.numel() / weight.size(0))));
  }
  void linear_default(const Linear& l) {
    torch_default(l->weight);
    if (l->bias.defined())
      uniform(l->bias, 1.0 / std::sqrt(static_cast<double>(l->weight.size(1))));
  }
  void layer_norm(const LayerNorm& ln) {
    constant(ln->weight, 1.0);
    constant(ln->bias, 0.0);
  }
  void batch_norm(const nn::BatchNorm2d& bn, double weight = 1.0) {
    constant(bn->weight, weight);
    constant(bn->bias, 0.0);
    constant(bn->running_mean, 0.0);
    constant(bn->running_var, 1.0);
    constant(bn->num_batches_tracked, 0.0);
  }

 private:
  void fill(const at::Tensor& t, const std::function<void(at::Tensor&)>& f) {
    at::NoGradGuard g;
    at::Tensor c = at::empty(t.sizes(), at::TensorOptions().dtype(at::kFloat));
    f(c);
    t.copy_(c);
  }
  at::Generator gen_;
};

}  // namespace

void ClipImpl::init_parameters(std::uint64_t seed) {
  Initializer init(seed);
  if (visual_vit) {
    // OpenCLIP's VisionTransformer: embeddings and proj ~ N(0, width^-0.5); the rest keeps
    // PyTorch's defaults (nn.MultiheadAttention: xavier in_proj, zero biases).
    auto& v = *visual_vit;
    init.torch_default(v.conv1->weight);
    const double scale = std::pow(static_cast<double>(v.width), -0.5);
    init.normal(v.class_embedding, scale);
    init.normal(v.positional_embedding, scale);
    init.layer_norm(v.ln_pre);
    for (std::int64_t i = 0; i < v.transformer->layers; ++i) {
      auto blk = v.transformer->block(i);
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
    init.layer_norm(v.ln_post);
    init.normal(v.proj, scale);
  } else {
    // OpenCLIP's ModifiedResNet: PyTorch defaults, attention pool ~ N(0, C^-0.5), and each
    // bottleneck's last BatchNorm starts at zero so every residual branch starts as identity.
    auto& r = *visual_resnet;
    for (auto* c : {&r.conv1, &r.conv2, &r.conv3}) init.torch_default((*c)->weight);
    for (auto* b : {&r.bn1, &r.bn2, &r.bn3}) init.batch_norm(*b);
    for (auto* layer : {&r.layer1, &r.layer2, &r.layer3, &r.layer4})
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
    auto& p = *r.attnpool;
    const double std = std::pow(static_cast<double>(p.c_proj->weight.size(1)), -0.5);
    init.normal(p.positional_embedding,
                std::pow(static_cast<double>(p.k_proj->weight.size(1)), -0.5));
    for (auto* l : {&p.q_proj, &p.k_proj, &p.v_proj, &p.c_proj}) {
      init.linear_default(*l);  // biases: PyTorch's default
      init.normal((*l)->weight, std);
    }
  }

  // Text tower: OpenAI's init.
  const auto w = static_cast<double>(spec_.text_width);
  const double proj_std = std::pow(w, -0.5) * std::pow(2.0 * spec_.text_layers, -0.5);
  const double attn_std = std::pow(w, -0.5);
  const double fc_std = std::pow(2.0 * w, -0.5);
  init.normal(token_embedding->weight, 0.02);
  init.normal(positional_embedding, 0.01);
  for (std::int64_t i = 0; i < transformer->layers; ++i) {
    auto blk = transformer->block(i);
    init.layer_norm(blk->ln_1);
    init.normal(blk->attn->in_proj_weight, attn_std);
    init.constant(blk->attn->in_proj_bias, 0.0);
    init.normal(blk->attn->out_proj->weight, proj_std);
    init.constant(blk->attn->out_proj->bias, 0.0);
    init.layer_norm(blk->ln_2);
    init.linear_default(blk->mlp->c_fc);
    init.normal(blk->mlp->c_fc->weight, fc_std);
    init.linear_default(blk->mlp->c_proj);
    init.normal(blk->mlp->c_proj->weight, proj_std);
  }
  init.layer_norm(ln_final);
  init.normal(text_projection, attn_std);
  init.constant(logit_scale, spec_.init_logit_scale);
  if (logit_bias.defined()) init.constant(logit_bias, *spec_.init_logit_bias);
}

// --- Training switches -------------------------------------------------------------------------

void ClipImpl::set_grad_checkpointing(bool enable) {
  if (visual_vit) visual_vit->transformer->grad_checkpointing = enable;
  transformer->grad_checkpointing = enable;
}

bool ClipImpl::grad_checkpointing() const {
  return transformer->grad_checkpointing;
}

void ClipImpl::set_patch_dropout(double fraction) {
  core::require(fraction >= 0.0 && fraction < 1.0,
                "patch dropout must be in [0, 1), got " + std::to_string(fraction));
  spec_.patch_dropout = fraction;
  if (visual_vit) visual_vit->patch_dropout = fraction;
}

namespace {

using Group = std::vector<at::Tensor>;

Group params_of(const nn::Module& m) {
  return m.parameters();
}

void append(Group& g, const Group& more) {
  g.insert(g.end(), more.begin(), more.end());
}

// Freezes every tensor of `groups`, then unfreezes the last `unlocked` groups.
void lock_groups(const std::vector<Group>& groups, std::int64_t unlocked) {
  for (const auto& g : groups)
    for (const auto& t : g) t.set_requires_grad(false);
  const auto n = std::min<std::int64_t>(std::max<std::int64_t>(unlocked, 0),
                                        static_cast<std::int64_t>(groups.size()));
  for (auto i = static_cast<std::int64_t>(groups.size()) - n;
       i < static_cast<std::int64_t>(groups.size()); ++i)
    for (const auto& t : groups[i]) t.set_requires_grad(true);
}

}  // namespace

void ClipImpl::lock_image_tower(std::int64_t unlocked_groups, bool freeze_bn_stats) {
  std::vector<Group> groups;
  if (visual_vit) {
    auto& v = *visual_vit;
    Group first = params_of(*v.conv1);
    first.push_back(v.class_embedding);
    first.push_back(v.positional_embedding);
    append(first, params_of(*v.ln_pre));
    groups.push_back(first);
    for (std::int64_t i = 0; i + 1 < v.transformer->layers; ++i)
      groups.push_back(params_of(*v.transformer->block(i)));
    Group last = params_of(*v.transformer->block(v.transformer->layers - 1));
    append(last, params_of(*v.ln_post));
    groups.push_back(last);
    groups.push_back({v.proj});
  } else {
    auto& r = *visual_resnet;
    Group stem;
    for (const nn::Module* m : std::vector<const nn::Module*>{
             r.conv1.get(), r.bn1.get(), r.conv2.get(), r.bn2.get(), r.conv3.get(), r.bn3.get()})
      append(stem, params_of(*m));
    groups.push_back(stem);
    for (auto* layer : {&r.layer1, &r.layer2, &r.layer3, &r.layer4})
      groups.push_back(params_of(**layer));
    groups.push_back(params_of(*r.attnpool));
    r.set_freeze_bn_stats(freeze_bn_stats);
  }
  lock_groups(groups, unlocked_groups);
}

void ClipImpl::lock_text_tower(std::int64_t unlocked_layers) {
  std::vector<Group> groups;
  groups.push_back({token_embedding->weight, positional_embedding});
  for (std::int64_t i = 0; i + 1 < transformer->layers; ++i)
    groups.push_back(params_of(*transformer->block(i)));
  Group last = params_of(*transformer->block(transformer->layers - 1));
  append(last, params_of(*ln_final));
  groups.push_back(last);
  groups.push_back({text_projection});
  lock_groups(groups, unlocked_layers);
}

std::vector<std::pair<std::string, at::Tensor>> ClipImpl::state_dict() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : named_parameters(true)) out.emplace_back(p.key(), p.value());
  for (const auto& b : named_buffers(true)) out.emplace_back(b.key(), b.value());
  return out;
}

Clip create_model(const ModelSpec& spec, std::uint64_t seed) {
  Clip model(spec);
  model->init_parameters(seed);
  return model;
}

}  // namespace clipper::model
