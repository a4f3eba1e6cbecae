#include "clipper/model/text_tower.hpp"

#include <cmath>

#include "initializer.hpp"

namespace clipper::model {

namespace nn = torch::nn;

TextTransformerImpl::TextTransformerImpl(const ModelSpec& spec) : spec_(spec) {
  token_embedding =
      register_module("token_embedding", nn::Embedding(spec.vocab_size, spec.text_width));
  if (spec.text_embed_cls) cls_emb = register_parameter("cls_emb", at::zeros({spec.text_width}));
  positional_embedding = register_parameter("positional_embedding",
                                            at::zeros({spec.text_positions(), spec.text_width}));
  transformer = register_module(
      "transformer", Transformer(spec.text_width, spec.text_layers, spec.text_heads,
                                 spec.text_mlp_ratio, spec.text_activation(), spec.text_norm_eps));
  ln_final = register_module("ln_final", LayerNorm(spec.text_width, spec.text_norm_eps));
  if (spec.text_proj_none) return;
  if (spec.text_proj_bias)
    projection_linear = register_module("text_projection", Linear(spec.text_width, spec.embed_dim));
  else
    projection =
        register_parameter("text_projection", at::zeros({spec.text_width, spec.embed_dim}));
}

void TextTransformerImpl::register_parts(nn::Module& owner) {
  // CLIP's order (the flat layouts of optimizer state follow registration order).
  owner.register_module("transformer", transformer);
  owner.register_module("token_embedding", token_embedding);
  owner.register_parameter("positional_embedding", positional_embedding);
  if (cls_emb.defined()) owner.register_parameter("cls_emb", cls_emb);
  owner.register_module("ln_final", ln_final);
  if (projection_linear) owner.register_module("text_projection", projection_linear);
  if (projection.defined()) owner.register_parameter("text_projection", projection);
}

at::Tensor TextTransformerImpl::pool_index(const at::Tensor& tokens) const {
  const auto b = tokens.size(0), l = tokens.size(1);
  switch (spec_.text_pool) {
    case TextPool::eos:
      return tokens.eq(spec_.text_eos_id).to(at::kInt).argmax(-1);
    case TextPool::first:
      return at::zeros({b}, tokens.options());
    case TextPool::last:
      return at::full({b}, l - 1, tokens.options());
    default:  // argmax: with the CLIP tokenizer the end-of-text id is the largest of a row
      return tokens.argmax(-1);
  }
}

at::Tensor TextTransformerImpl::project(const at::Tensor& pooled) {
  if (projection_linear) return projection_linear->forward(pooled);
  if (projection.defined()) return at::matmul(pooled, projection.to(pooled.scalar_type()));
  return pooled;
}

void TextTransformerImpl::check_tokens(const at::Tensor& tokens) const {
  TORCH_CHECK(tokens.dim() == 2, "tokens must be [B, L], got ", tokens.sizes());
  TORCH_CHECK(tokens.scalar_type() == at::kLong, "tokens must be int64, got ",
              tokens.scalar_type());
  TORCH_CHECK(tokens.size(1) <= spec_.context_length, "token rows of length ", tokens.size(1),
              " exceed the model's context_length ", spec_.context_length);
}

std::pair<at::Tensor, at::Tensor> TextTransformerImpl::forward_with_tokens(
    const at::Tensor& tokens) {
  check_tokens(tokens);
  TORCH_CHECK(cls_emb.defined(), "forward_with_tokens needs a text tower with embed_cls");
  const auto b = tokens.size(0), l = tokens.size(1), n = l + 1;
  auto x = token_embedding->forward(tokens);
  x = at::cat({x, cls_emb.to(x.scalar_type()).view({1, 1, -1}).expand({b, 1, x.size(2)})}, 1);
  x = x + positional_embedding.narrow(0, 0, n).to(x.scalar_type());
  // Key j is visible when j == 0 or token j - 1 is not padding (open_clip's legacy CLS mask).
  const auto valid = at::cat(
      {at::ones({b, 1}, tokens.options().dtype(at::kBool)), tokens.ne(spec_.text_pad_id)}, 1);
  auto mask = valid.view({b, 1, 1, n});
  if (!spec_.text_no_causal_mask)
    mask = mask.logical_and(at::ones({n, n}, mask.options()).tril().view({1, 1, n, n}));
  x = transformer->forward_masked(x, mask);
  auto pooled = project(ln_final->forward(x.select(1, l)));
  return {pooled, x.narrow(1, 0, l)};
}

at::Tensor TextTransformerImpl::forward(const at::Tensor& tokens) {
  if (cls_emb.defined()) return forward_with_tokens(tokens).first;
  check_tokens(tokens);
  const auto l = tokens.size(1);
  auto x = token_embedding->forward(tokens) + positional_embedding.narrow(0, 0, l);
  // The last block computes the pooled token only; ln_final is per token, so it comes after.
  const bool causal = !spec_.text_no_causal_mask;
  return project(ln_final->forward(transformer->forward_token(x, pool_index(tokens), causal)));
}

void TextTransformerImpl::init_parameters(Initializer& init) {
  const auto w = static_cast<double>(spec_.text_width);
  const double proj_std = std::pow(w, -0.5) * std::pow(2.0 * spec_.text_layers, -0.5);
  const double attn_std = std::pow(w, -0.5);
  const double fc_std = std::pow(2.0 * w, -0.5);
  init.normal(token_embedding->weight, 0.02);
  init.normal(positional_embedding, 0.01);
  if (cls_emb.defined()) init.normal(cls_emb, 0.01);
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
  if (projection.defined()) init.normal(projection, attn_std);
  if (projection_linear) {
    init.normal(projection_linear->weight, attn_std);
    init.constant(projection_linear->bias, 0.0);
  }
}

std::vector<std::vector<at::Tensor>> TextTransformerImpl::lock_groups() {
  std::vector<std::vector<at::Tensor>> groups;
  groups.push_back({token_embedding->weight, positional_embedding});
  if (cls_emb.defined()) groups.back().push_back(cls_emb);
  for (std::int64_t i = 0; i + 1 < transformer->layers; ++i)
    groups.push_back(transformer->block(i)->parameters());
  auto last = transformer->block(transformer->layers - 1)->parameters();
  for (const auto& p : ln_final->parameters()) last.push_back(p);
  groups.push_back(last);
  if (projection.defined()) groups.push_back({projection});
  if (projection_linear) groups.push_back(projection_linear->parameters());
  return groups;
}

}  // namespace clipper::model
