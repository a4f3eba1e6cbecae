// The modules: attention against a naive implementation, the pooled-token last block against the
// full one, the causal mask, end-of-text pooling,
// shapes for any image and patch size, patch dropout, initialization statistics, determinism.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "clipper/core/error.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/model/model_spec.hpp"
#include "clipper/model/transformer.hpp"

namespace cm = clipper::model;

namespace {

// Softmax(q k^T / sqrt(d) + mask) v with the packed in_proj, written out by hand.
at::Tensor naive_attention(cm::AttentionImpl& a, const at::Tensor& x, bool causal) {
  const auto n = x.size(0), l = x.size(1), d = a.dim, h = a.heads, hd = d / h;
  auto w = a.in_proj_weight, b = a.in_proj_bias;
  auto q = at::matmul(x, w.narrow(0, 0, d).t()) + b.narrow(0, 0, d);
  auto k = at::matmul(x, w.narrow(0, d, d).t()) + b.narrow(0, d, d);
  auto v = at::matmul(x, w.narrow(0, 2 * d, d).t()) + b.narrow(0, 2 * d, d);
  auto split = [&](const at::Tensor& t) { return t.view({n, l, h, hd}).permute({0, 2, 1, 3}); };
  auto scores = at::matmul(split(q), split(k).transpose(-1, -2)) / std::sqrt(double(hd));
  if (causal) {
    auto mask = at::full({l, l}, -INFINITY).triu(1);
    scores = scores + mask;
  }
  auto o = at::matmul(scores.softmax(-1), split(v)).permute({0, 2, 1, 3}).reshape({n, l, d});
  return at::matmul(o, a.out_proj->weight.t()) + a.out_proj->bias;
}

cm::ModelSpec tiny_vit() {
  return cm::load_model_spec("tiny-vit");
}

at::Tensor random_tokens(std::int64_t b, std::int64_t l, std::int64_t vocab, int seed) {
  at::manual_seed(seed);
  auto t = at::randint(1, vocab - 2, {b, l}, at::kLong);
  t.select(1, 0).fill_(vocab - 2);  // start of text
  for (std::int64_t i = 0; i < b; ++i) {
    const auto eot = 3 + (i * 5) % (l - 3);
    t[i][eot] = vocab - 1;
    if (eot + 1 < l) t[i].narrow(0, eot + 1, l - eot - 1).zero_();
  }
  return t;
}

double stddev(const at::Tensor& t) {
  return t.std().item<double>();
}

}  // namespace

TEST(Attention, SdpaMatchesNaive) {
  at::manual_seed(0);
  cm::Attention a(64, 4);
  {
    at::NoGradGuard g;
    a->in_proj_weight.normal_(0, 0.2);
    a->in_proj_bias.normal_(0, 0.1);
    a->out_proj->bias.normal_(0, 0.1);
  }
  const auto x = at::randn({3, 11, 64});
  for (bool causal : {false, true}) {
    const auto got = a->forward(x, causal);
    const auto want = naive_attention(*a, x, causal);
    EXPECT_TRUE(at::allclose(got, want, 1e-5, 1e-5))
        << "causal=" << causal << " max diff " << (got - want).abs().max().item<double>();
  }
}

// The towers run their last block for the pooled token only: the same output, and the same
// gradients for every parameter and the input, as the full forward followed by the gather.
TEST(Transformer, ForwardTokenEqualsFullForwardAtThatToken) {
  for (bool causal : {false, true}) {
    at::manual_seed(3);
    cm::Transformer t(64, 3, 4, 4.0, cm::Activation::gelu);
    {
      at::NoGradGuard g;
      for (auto& p : t->parameters()) p.normal_(0, 0.1);
    }
    const auto x = at::randn({5, 13, 64}).requires_grad_();
    const auto index =
        causal ? at::tensor(std::vector<std::int64_t>{12, 0, 6, 3, 9}) : at::zeros({5}, at::kLong);
    const auto full = t->forward(x, causal).gather(1, index.view({5, 1, 1}).expand({5, 1, 64}));
    const auto weights = at::randn({5, 64});
    (full.squeeze(1) * weights).sum().backward();
    std::vector<at::Tensor> want{x.grad().clone()};
    for (auto& p : t->parameters()) {
      want.push_back(p.grad().clone());
      p.mutable_grad() = at::Tensor();
    }
    x.mutable_grad() = at::Tensor();
    const auto got = t->forward_token(x, index, causal);
    ASSERT_EQ(got.sizes(), (std::vector<std::int64_t>{5, 64}));
    EXPECT_TRUE(at::allclose(got, full.squeeze(1), 1e-5, 1e-5))
        << "causal=" << causal << " max diff "
        << (got - full.squeeze(1)).abs().max().item<double>();
    (got * weights).sum().backward();
    std::vector<at::Tensor> have{x.grad()};
    for (auto& p : t->parameters()) have.push_back(p.grad());
    ASSERT_EQ(have.size(), want.size());
    for (std::size_t i = 0; i < have.size(); ++i)
      EXPECT_TRUE(at::allclose(have[i], want[i], 1e-4, 1e-5))
          << "causal=" << causal << " gradient " << i << " max diff "
          << (have[i] - want[i]).abs().max().item<double>();
  }
}

TEST(Attention, QuickGeluAndGelu) {
  const auto x = at::linspace(-4, 4, 101);
  EXPECT_TRUE(
      at::allclose(cm::activate(x, cm::Activation::quick_gelu), x * at::sigmoid(1.702 * x)));
  const auto erf_gelu = 0.5 * x * (1 + at::erf(x / std::sqrt(2.0)));
  EXPECT_TRUE(at::allclose(cm::activate(x, cm::Activation::gelu), erf_gelu, 1e-6, 1e-6));
}

TEST(TextTower, CausalMaskHidesLaterTokens) {
  auto m = cm::create_model(tiny_vit(), 1);
  m->eval();
  at::NoGradGuard g;
  auto tokens = random_tokens(2, 32, 49408, 3);
  auto x = m->token_embedding->forward(tokens) + m->positional_embedding;
  const auto y = m->transformer->forward(x, true);
  // Change the tokens from position 10 on: outputs before 10 stay, later ones change.
  auto t2 = tokens.clone();
  t2.narrow(1, 10, 22).fill_(123);
  auto x2 = m->token_embedding->forward(t2) + m->positional_embedding;
  const auto y2 = m->transformer->forward(x2, true);
  EXPECT_TRUE(at::allclose(y.narrow(1, 0, 10), y2.narrow(1, 0, 10), 1e-6, 1e-6));
  EXPECT_FALSE(at::allclose(y.narrow(1, 10, 1), y2.narrow(1, 10, 1), 1e-3, 1e-3));
  // Without the mask, earlier positions see the change.
  const auto z = m->transformer->forward(x, false), z2 = m->transformer->forward(x2, false);
  EXPECT_FALSE(at::allclose(z.narrow(1, 0, 1), z2.narrow(1, 0, 1), 1e-3, 1e-3));
}

TEST(TextTower, PoolsAtEndOfTextToken) {
  auto m = cm::create_model(tiny_vit(), 2);
  m->eval();
  at::NoGradGuard g;
  auto tokens = random_tokens(4, 32, 49408, 5);
  const auto feats = m->encode_text(tokens, false);
  ASSERT_EQ(feats.sizes(), (at::IntArrayRef{4, 128}));
  auto x = m->token_embedding->forward(tokens) + m->positional_embedding;
  x = m->ln_final->forward(m->transformer->forward(x, true));
  for (std::int64_t i = 0; i < 4; ++i) {
    const auto eot = tokens[i].argmax().item<std::int64_t>();
    EXPECT_EQ(tokens[i][eot].item<std::int64_t>(), 49407);
    const auto want = at::matmul(x[i][eot], m->text_projection);
    EXPECT_TRUE(at::allclose(feats[i], want, 1e-5, 1e-5)) << i;
  }
  // What follows the end-of-text token does not matter (causal mask + pooling there).
  auto t2 = tokens.clone();
  for (std::int64_t i = 0; i < 4; ++i) {
    const auto eot = tokens[i].argmax().item<std::int64_t>();
    if (eot + 1 < 32) t2[i].narrow(0, eot + 1, 31 - eot).fill_(77);
  }
  EXPECT_TRUE(at::allclose(m->encode_text(t2, false), feats, 1e-6, 1e-6));
  // Shorter rows than the context work (positional embedding cut).
  const auto short_feats = m->encode_text(tokens.narrow(1, 0, 24), false);
  EXPECT_EQ(short_feats.size(0), 4);
  EXPECT_THROW(m->encode_text(at::zeros({1, 33}, at::kLong)), c10::Error);
}

TEST(TextTower, EosPoolingForOtherTokenizers) {
  auto spec = tiny_vit();
  spec.text_pool = cm::TextPool::eos;
  spec.text_eos_id = 7;
  auto m = cm::create_model(spec, 2);
  m->eval();
  at::NoGradGuard g;
  auto tokens = random_tokens(2, 32, 49408, 6);
  tokens.narrow(1, 1, 31).clamp_(8, 49407);
  tokens[0][4] = 7;
  tokens[1][9] = 7;
  tokens[1][12] = 7;
  auto x = m->token_embedding->forward(tokens) + m->positional_embedding;
  x = m->ln_final->forward(m->transformer->forward(x, true));
  const auto feats = m->encode_text(tokens, false);
  EXPECT_TRUE(at::allclose(feats[0], at::matmul(x[0][4], m->text_projection), 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(feats[1], at::matmul(x[1][9], m->text_projection), 1e-5, 1e-5));
}

TEST(Clip, ShapesNormsAndOutputs) {
  for (const char* name : {"tiny-vit", "tiny-rn"}) {
    auto spec = cm::load_model_spec(name);
    auto m = cm::create_model(spec, 0);
    m->eval();
    at::NoGradGuard g;
    const auto images = at::randn({3, 3, spec.image_size, spec.image_size});
    const auto tokens = random_tokens(3, spec.context_length, spec.vocab_size, 1);
    const auto out = m->forward(images, tokens);
    EXPECT_EQ(out.image_features.sizes(), (at::IntArrayRef{3, spec.embed_dim})) << name;
    EXPECT_EQ(out.text_features.sizes(), (at::IntArrayRef{3, spec.embed_dim})) << name;
    EXPECT_TRUE(at::allclose(out.image_features.norm(2, -1), at::ones({3}), 1e-5, 1e-5));
    EXPECT_TRUE(at::allclose(out.text_features.norm(2, -1), at::ones({3}), 1e-5, 1e-5));
    EXPECT_NEAR(out.logit_scale.item<double>(), 1 / 0.07, 1e-3);
    EXPECT_FALSE(out.logit_bias.defined());
    const auto raw = m->encode_image(images, false);
    EXPECT_TRUE(at::allclose(raw / raw.norm(2, -1, true), out.image_features, 1e-5, 1e-5));
  }
  auto spec = tiny_vit();
  spec.init_logit_bias = -10.0;
  spec.init_logit_scale = std::log(10.0);
  auto m = cm::create_model(spec, 0);
  const auto out = m->forward(at::randn({1, 3, 32, 32}), random_tokens(1, 32, 49408, 2));
  ASSERT_TRUE(out.logit_bias.defined());
  EXPECT_DOUBLE_EQ(out.logit_bias.item<double>(), -10.0);
  EXPECT_NEAR(out.logit_scale.item<double>(), 10.0, 1e-5);
}

TEST(VisionTransformer, AnyImageAndPatchSize) {
  struct Case {
    std::int64_t image, patch;
  };
  for (const Case c : {Case{48, 8}, Case{64, 16}, Case{36, 12}}) {
    auto spec = tiny_vit();
    spec.image_size = c.image;
    spec.patch_size = c.patch;
    auto m = cm::create_model(spec, 0);
    m->eval();
    const auto grid = c.image / c.patch;
    EXPECT_EQ(m->visual_vit->positional_embedding.size(0), grid * grid + 1);
    EXPECT_EQ(m->visual_vit->conv1->weight.sizes(), (at::IntArrayRef{192, 3, c.patch, c.patch}));
    at::NoGradGuard g;
    EXPECT_EQ(m->encode_image(at::randn({2, 3, c.image, c.image})).sizes(),
              (at::IntArrayRef{2, 128}));
    EXPECT_THROW(m->encode_image(at::randn({2, 3, c.image + c.patch, c.image + c.patch})),
                 c10::Error);
  }
}

TEST(VisionTransformer, PatchDropoutKeepsClassTokenInTrainingOnly) {
  auto spec = tiny_vit();
  spec.patch_dropout = 0.5;
  auto m = cm::create_model(spec, 0);
  auto& v = *m->visual_vit;
  at::NoGradGuard g;
  const auto images = at::randn({2, 3, 32, 32});
  m->eval();
  const auto full = v.embed(images);
  EXPECT_EQ(full.size(1), 65);
  m->train();
  const auto kept = v.embed(images);
  EXPECT_EQ(kept.size(1), 1 + 32);  // int(64 * 0.5) patches + class token
  EXPECT_TRUE(at::equal(kept.select(1, 0), full.select(1, 0)));
  // Every kept token is one of the full sequence's patch tokens, with no repeats.
  for (std::int64_t b = 0; b < 2; ++b) {
    const auto d = at::cdist(kept[b].narrow(0, 1, 32), full[b].narrow(0, 1, 64), 2.0, /*no mm*/ 2);
    const auto match = std::get<1>(d.min(1));
    EXPECT_TRUE(at::allclose(std::get<0>(d.min(1)), at::zeros({32}), 0, 1e-5));
    EXPECT_EQ(std::get<0>(at::_unique(match)).numel(), 32);
  }
  EXPECT_EQ(m->encode_image(images).size(0), 2);
  m->set_patch_dropout(0.0);
  EXPECT_EQ(v.embed(images).size(1), 65);
}

TEST(Init, DeterministicForASeed) {
  const auto spec = cm::load_model_spec("tiny-rn");
  auto a = cm::create_model(spec, 42), b = cm::create_model(spec, 42),
       c = cm::create_model(spec, 43);
  const auto sa = a->state_dict(), sb = b->state_dict(), sc = c->state_dict();
  ASSERT_EQ(sa.size(), sb.size());
  bool any_diff = false;
  for (std::size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i].first, sb[i].first);
    EXPECT_TRUE(at::equal(sa[i].second, sb[i].second)) << sa[i].first;
    if (!at::equal(sa[i].second, sc[i].second)) any_diff = true;
  }
  EXPECT_TRUE(any_diff);
}

TEST(Init, OpenAiStatistics) {
  const auto spec = tiny_vit();
  auto m = cm::create_model(spec, 7);
  const double w = 128, layers = 3;
  const double proj_std = std::pow(w, -0.5) * std::pow(2 * layers, -0.5);
  auto near = [](double got, double want, double rel) {
    return std::abs(got - want) <= rel * want;
  };
  EXPECT_TRUE(near(stddev(m->token_embedding->weight), 0.02, 0.01));
  EXPECT_TRUE(near(stddev(m->positional_embedding), 0.01, 0.05));
  EXPECT_TRUE(near(stddev(m->text_projection), std::pow(w, -0.5), 0.03));
  for (std::int64_t i = 0; i < 3; ++i) {
    auto blk = m->transformer->block(i);
    EXPECT_TRUE(near(stddev(blk->attn->in_proj_weight), std::pow(w, -0.5), 0.03));
    EXPECT_TRUE(near(stddev(blk->attn->out_proj->weight), proj_std, 0.03));
    EXPECT_TRUE(near(stddev(blk->mlp->c_fc->weight), std::pow(2 * w, -0.5), 0.03));
    EXPECT_TRUE(near(stddev(blk->mlp->c_proj->weight), proj_std, 0.03));
    EXPECT_EQ(blk->attn->in_proj_bias.abs().max().item<double>(), 0.0);
    EXPECT_EQ(blk->attn->out_proj->bias.abs().max().item<double>(), 0.0);
    EXPECT_TRUE(at::equal(blk->ln_1->weight, at::ones({128})));
  }
  EXPECT_NEAR(m->logit_scale.item<double>(), 2.6593, 1e-4);
  // Image tower (OpenCLIP's VisionTransformer): embeddings and proj ~ N(0, width^-0.5),
  // xavier-uniform in_proj.
  const double vw = 192;
  auto& v = *m->visual_vit;
  EXPECT_TRUE(near(stddev(v.class_embedding), std::pow(vw, -0.5), 0.2));
  EXPECT_TRUE(near(stddev(v.positional_embedding), std::pow(vw, -0.5), 0.03));
  EXPECT_TRUE(near(stddev(v.proj), std::pow(vw, -0.5), 0.03));
  const auto in_proj = v.transformer->block(0)->attn->in_proj_weight;
  EXPECT_LE(in_proj.abs().max().item<double>(), std::sqrt(6.0 / (4 * vw)) + 1e-7);
  EXPECT_TRUE(near(stddev(in_proj), std::sqrt(6.0 / (4 * vw)) / std::sqrt(3.0), 0.03));

  // ModifiedResNet: zero bn3 in every bottleneck, attention pool ~ N(0, C^-0.5).
  auto r = cm::create_model(cm::load_model_spec("tiny-rn"), 7);
  for (const auto& [name, t] : r->state_dict()) {
    if (name.find("layer") != std::string::npos && name.find(".bn3.weight") != std::string::npos)
      EXPECT_EQ(t.abs().max().item<double>(), 0.0) << name;
    if (name == "visual.bn3.weight") EXPECT_TRUE(at::equal(t, at::ones_like(t)));
    if (name.find("running_var") != std::string::npos) EXPECT_TRUE(at::equal(t, at::ones_like(t)));
  }
  const double c = 16 * 32;
  auto& p = *r->visual_resnet->attnpool;
  for (auto* l : {&p.q_proj, &p.k_proj, &p.v_proj, &p.c_proj})
    EXPECT_TRUE(near(stddev((*l)->weight), std::pow(c, -0.5), 0.03));
}
