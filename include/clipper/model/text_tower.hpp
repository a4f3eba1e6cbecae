#pragma once
// The text tower, OpenCLIP's TextTransformer: token_embedding, positional_embedding,
// transformer.resblocks.{i}, ln_final, text_projection. CLIP's text tower is causal, pools the
// end-of-text token and projects with a [width, embed_dim] matrix; SigLIP's (custom_text) is
// bidirectional, pools the last position and projects with a Linear that has a bias. The CLIP
// model registers these parts at its top level (CLIP) or under `text.` (custom_text), so the
// state dict has OpenCLIP's names either way.
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/pimpl.h>
#include "clipper/model/linear.hpp"

#include <utility>
#include <vector>

#include "clipper/model/model_spec.hpp"
#include "clipper/model/transformer.hpp"

namespace clipper::model {

class Initializer;

class TextTransformerImpl : public torch::nn::Module {
 public:
  explicit TextTransformerImpl(const ModelSpec& spec);
  // tokens: int64 [B, L], L <= context_length; the unnormalized features [B, embed_dim].
  at::Tensor forward(const at::Tensor& tokens);
  // CoCa's text tower (text_cfg.embed_cls): the CLS embedding is appended after the L tokens and
  // its output, after ln_final, is the pooled feature; the other L outputs (before ln_final) are
  // the tokens the decoder reads. Attention is causal, and a key at position j > 0 is hidden when
  // token j - 1 is text_cfg.pad_id (open_clip's mask, which its trained CoCa weights expect).
  // Returns the features [B, embed_dim] and the tokens [B, L, width].
  std::pair<at::Tensor, at::Tensor> forward_with_tokens(const at::Tensor& tokens);
  // OpenAI's init (OpenCLIP's TextTransformer.init_parameters).
  void init_parameters(Initializer& init);
  // [token_embedding, positional_embedding], each block but the last, [last block, ln_final],
  // [text_projection].
  std::vector<std::vector<at::Tensor>> lock_groups();
  // Registers the parts on `owner` as well, under the same names: CLIP's top-level text tower.
  void register_parts(torch::nn::Module& owner);

  torch::nn::Embedding token_embedding{nullptr};
  at::Tensor positional_embedding;
  at::Tensor cls_emb;  // [width], text_cfg.embed_cls
  Transformer transformer{nullptr};
  LayerNorm ln_final{nullptr};
  at::Tensor projection;              // [width, embed_dim] when the projection has no bias
  Linear projection_linear{nullptr};  // proj_bias: weight [embed_dim, width] and bias

 private:
  // Which position's output is pooled, per row.
  at::Tensor pool_index(const at::Tensor& tokens) const;
  at::Tensor project(const at::Tensor& pooled);
  void check_tokens(const at::Tensor& tokens) const;
  ModelSpec spec_;
};
TORCH_MODULE(TextTransformer);

}  // namespace clipper::model
