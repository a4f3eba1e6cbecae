// SigLIP 2's model pieces: the LocCa decoder path (model::decoder_logits: with causal attention
// it is CoCa's decoder, without it every position sees every other one) and masked prediction's
// student (model::masked_patch_tokens).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "clipper/core/error.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/model/model_spec.hpp"
#include "clipper/model/siglip2.hpp"

namespace {

namespace cm = clipper::model;

TEST(LoccaDecoder, CausalIsCocasDecoderAndParallelSeesLaterTokens) {
  auto model = cm::create_model(cm::load_model_spec("tiny-coca"), 3);
  model->eval();
  at::NoGradGuard no_grad;
  at::manual_seed(1);
  const auto images = at::randn({2, 3, 28, 28});
  auto tokens = at::randint(1, 400, {2, 8}, at::TensorOptions().dtype(at::kLong));
  const auto image_tokens = model->encode_image_tokens(images).second;
  const auto causal = cm::decoder_logits(*model, image_tokens, tokens, true);
  EXPECT_TRUE(at::allclose(causal, model->forward_coca(images, tokens).logits, 1e-5, 1e-6));

  // Change the 6th input token: causal logits before it stay, parallel ones change everywhere.
  auto changed = tokens.clone();
  changed.select(1, 5).fill_(401);
  const auto causal2 = cm::decoder_logits(*model, image_tokens, changed, true);
  EXPECT_TRUE(at::allclose(causal.narrow(1, 0, 5), causal2.narrow(1, 0, 5), 1e-5, 1e-6));
  const auto parallel = cm::decoder_logits(*model, image_tokens, tokens, false);
  const auto parallel2 = cm::decoder_logits(*model, image_tokens, changed, false);
  EXPECT_GT((parallel.select(1, 0) - parallel2.select(1, 0)).abs().max().item<double>(), 1e-4);
  EXPECT_GT((parallel - causal).abs().max().item<double>(), 1e-4);

  auto plain = cm::create_model(cm::load_model_spec("tiny-vit"), 3);
  EXPECT_THROW(cm::decoder_logits(*plain, image_tokens, tokens, true), clipper::core::InputError);
}

// Parallel prediction with the learned mask embedding (loss.siglip2's choice): the targets'
// tokens do not reach the logits, the embedding does; with the embedding set to a token's own
// embedding at one masked position it equals decoder_logits with that token there, no causality.
TEST(LoccaDecoder, ParallelPredictionReadsTheMaskEmbeddingNotTheTargets) {
  auto model = cm::create_model(cm::load_model_spec("tiny-coca"), 3);
  model->eval();
  at::NoGradGuard no_grad;
  at::manual_seed(1);
  const auto images = at::randn({2, 3, 28, 28});
  auto tokens = at::randint(1, 400, {2, 8}, at::TensorOptions().dtype(at::kLong));
  const auto image_tokens = model->encode_image_tokens(images).second;
  const auto start = at::tensor(std::vector<std::int64_t>{3, 5});
  const auto mask = at::randn({64});
  const auto out = cm::parallel_decoder_logits(*model, image_tokens, tokens, start, mask);
  auto other = tokens.clone();
  other.narrow(1, 5, 3).fill_(7);  // both rows' targets (and row 0's) changed from position 5
  EXPECT_TRUE(at::allclose(
      out, cm::parallel_decoder_logits(*model, image_tokens, other, start, mask), 1e-5, 1e-6));
  const auto moved = cm::parallel_decoder_logits(*model, image_tokens, tokens, start, -mask);
  EXPECT_GT((moved - out).abs().max().item<double>(), 1e-4);
  // Every position of both rows masked with token 9's embedding == all tokens 9, full attention.
  const auto nines = at::full({2, 8}, 9, tokens.options());
  const auto all = at::zeros({2}, tokens.options());
  const auto emb = model->text->token_embedding->weight[9];
  EXPECT_TRUE(at::allclose(cm::parallel_decoder_logits(*model, image_tokens, tokens, all, emb),
                           cm::decoder_logits(*model, image_tokens, nines, false), 1e-5, 1e-6));
}

TEST(MaskedPatchTokens, ReplacesThePatchEmbeddingsWhereMasked) {
  auto model = cm::create_model(cm::load_model_spec("tiny-vit"), 4);  // 32x32, 4x4 patches
  model->eval();
  at::NoGradGuard no_grad;
  auto& vit = *model->visual_vit;
  at::manual_seed(2);
  const auto images = at::randn({2, 3, 32, 32});
  const auto n = vit.grid * vit.grid;
  auto mask = at::zeros({2, n}, at::TensorOptions().dtype(at::kBool));
  const auto token = at::randn({vit.width});
  // Nothing masked: the tower's own patch tokens.
  const auto plain = model->visual->forward_with_tokens(images).second;
  EXPECT_TRUE(at::allclose(cm::masked_patch_tokens(vit, images, mask, token), plain, 1e-5, 1e-6));
  // Patch 3 of sample 1 masked: the outputs change, sample 0's do not.
  mask[1][3] = true;
  const auto masked = cm::masked_patch_tokens(vit, images, mask, token);
  EXPECT_TRUE(at::allclose(masked[0], plain[0], 1e-5, 1e-6));
  EXPECT_GT((masked[1] - plain[1]).abs().max().item<double>(), 1e-4);
  // A mask token equal to that patch's own embedding changes nothing: the replacement happens at
  // the patch embedding, before the positional embedding.
  const auto own = vit.conv1->forward(images).flatten(2).transpose(1, 2)[1][3];
  EXPECT_TRUE(at::allclose(cm::masked_patch_tokens(vit, images, mask, own), plain, 1e-5, 1e-6));

  auto coca = cm::create_model(cm::load_model_spec("tiny-coca"), 4);  // attentional pooler
  EXPECT_THROW(cm::masked_patch_tokens(*coca->visual_vit, at::randn({1, 3, 28, 28}),
                                       at::zeros({1, 16}, at::TensorOptions().dtype(at::kBool)),
                                       at::zeros({96})),
               clipper::core::InputError);
}

}  // namespace
