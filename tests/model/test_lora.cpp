// LoRA: model::Linear and the attention's packed projection with adapters against their merged
// weights, the state-dict names, what is frozen, merging a state dict, and gradient checkpointing
// with adapter dropout (the recompute draws the forward's masks).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include <map>
#include <set>
#include <string>

#include "clipper/core/error.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/model/linear.hpp"
#include "clipper/model/lora.hpp"

namespace cm = clipper::model;

namespace {

at::Generator gen(std::uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

// B drawn at random (a fresh adapter's B is zero, so it would change nothing).
void randomize_b(torch::nn::Module& m, int seed) {
  at::manual_seed(seed);
  at::NoGradGuard g;
  for (const auto& p : m.named_parameters())
    if (p.key().size() >= 6 && p.key().compare(p.key().size() - 6, 6, "lora.B") == 0)
      p.value().normal_(0.0, 0.05);
}

std::set<std::string> names_of(const cm::ClipImpl& m) {
  std::set<std::string> s;
  for (const auto& [n, t] : m.state_dict()) s.insert(n);
  return s;
}

at::Tensor tokens_for(std::int64_t b, std::int64_t l) {
  auto t = at::randint(1, 49000, {b, l}, at::kLong);
  for (std::int64_t i = 0; i < b; ++i) t[i][5 + i] = 49407;
  return t;
}

}  // namespace

TEST(Lora, LinearAddsScaledLowRankProduct) {
  at::manual_seed(0);
  cm::Linear lin(12, 7);
  const auto x = at::randn({3, 5, 12});
  const auto plain = lin->forward(x);
  lin->attach_lora({4, 8.0, 0.0}, gen(1));
  EXPECT_TRUE(at::equal(lin->forward(x), plain));  // B starts at zero
  randomize_b(*lin, 2);
  const auto merged = lin->weight + 2.0 * at::matmul(lin->lora->B, lin->lora->A);
  EXPECT_TRUE(at::allclose(lin->forward(x), at::linear(x, merged, lin->bias), 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(lin->lora->delta(), merged - lin->weight, 1e-6, 1e-7));
  // peft's init: A ~ U(+-1/sqrt(in)), B zero, a scale of alpha / rank.
  EXPECT_LE(lin->lora->A.abs().max().item<double>(), 1.0 / std::sqrt(12.0));
  EXPECT_EQ(lin->lora->A.sizes(), (at::IntArrayRef{4, 12}));
  EXPECT_EQ(lin->lora->B.sizes(), (at::IntArrayRef{7, 4}));
  EXPECT_DOUBLE_EQ(lin->lora->scale.item<double>(), 2.0);
}

TEST(Lora, AttentionInProjAdapterEqualsMergedWeights) {
  at::manual_seed(0);
  cm::ResidualAttentionBlock blk(32, 4, 4.0, cm::Activation::gelu);
  cm::ResidualAttentionBlock merged(32, 4, 4.0, cm::Activation::gelu);
  blk->attn->attach_in_proj_lora({4, 4.0, 0.0}, gen(1));
  blk->attn->out_proj->attach_lora({4, 4.0, 0.0}, gen(2));
  blk->mlp->c_fc->attach_lora({4, 4.0, 0.0}, gen(3));
  randomize_b(*blk, 4);
  {
    at::NoGradGuard g;
    for (const auto& p : merged->named_parameters()) {
      const auto src = blk->named_parameters()[p.key()];
      p.value().copy_(src);
    }
    merged->attn->in_proj_weight.add_(blk->attn->in_proj_lora->delta());
    merged->attn->out_proj->weight.add_(blk->attn->out_proj->lora->delta());
    merged->mlp->c_fc->weight.add_(blk->mlp->c_fc->lora->delta());
  }
  const auto x = at::randn({2, 9, 32});
  for (bool causal : {false, true}) {
    const auto want = merged->forward(x, causal);
    EXPECT_TRUE(at::allclose(blk->forward(x, causal), want, 1e-5, 1e-5));
    // The pooled-token path slices the adapter's q rows and k/v rows.
    const auto index = at::tensor({3, 8}, at::kLong);
    const auto token = blk->forward_token(x, index, causal);
    const auto want_token = want.gather(1, index.view({2, 1, 1}).expand({2, 1, 32})).squeeze(1);
    EXPECT_TRUE(at::allclose(token, want_token, 1e-5, 1e-5));
  }
}

TEST(Lora, StateDictKeepsOpenClipNamesAndAddsAdapters) {
  auto m = cm::create_model(cm::load_model_spec("tiny-vit"), 0);
  const auto before = names_of(*m);
  const auto r = cm::apply_lora(*m, cm::LoraPlan{}, 0);
  const auto after = names_of(*m);
  for (const auto& n : before) EXPECT_TRUE(after.count(n)) << n;
  for (const char* n :
       {"visual.transformer.resblocks.0.attn.in_proj_lora.A",
        "visual.transformer.resblocks.0.attn.in_proj_lora.B",
        "visual.transformer.resblocks.0.attn.in_proj_lora.scale",
        "visual.transformer.resblocks.3.attn.out_proj.lora.A",
        "transformer.resblocks.2.mlp.c_fc.lora.B", "transformer.resblocks.0.mlp.c_proj.lora.A"})
    EXPECT_TRUE(after.count(n)) << n;
  // 4 image + 3 text blocks, 4 adapters each (in_proj, out_proj, c_fc, c_proj).
  EXPECT_EQ(r.adapters, 28);
  EXPECT_EQ(after.size(), before.size() + 28 * 3);
  for (const auto& p : m->named_parameters())
    EXPECT_EQ(p.value().requires_grad(), cm::is_lora_tensor(p.key())) << p.key();
  EXPECT_GT(r.adapter_values, 0);
  EXPECT_EQ(r.trainable_values, r.adapter_values);
}

TEST(Lora, TargetsTowersAndTrainableSelect) {
  auto m = cm::create_model(cm::load_model_spec("tiny-vit"), 0);
  cm::LoraPlan p;
  p.image = false;
  p.qkv = p.attn_out = false;
  p.mlp_proj = false;
  p.trainable = {"logit_scale", "ln_final"};
  EXPECT_EQ(cm::apply_lora(*m, p, 0).adapters, 3);  // c_fc of the 3 text blocks
  std::set<std::string> trainable;
  for (const auto& q : m->named_parameters())
    if (q.value().requires_grad()) trainable.insert(q.key());
  const std::set<std::string> want{"transformer.resblocks.0.mlp.c_fc.lora.A",
                                   "transformer.resblocks.0.mlp.c_fc.lora.B",
                                   "transformer.resblocks.1.mlp.c_fc.lora.A",
                                   "transformer.resblocks.1.mlp.c_fc.lora.B",
                                   "transformer.resblocks.2.mlp.c_fc.lora.A",
                                   "transformer.resblocks.2.mlp.c_fc.lora.B",
                                   "logit_scale",
                                   "ln_final.weight",
                                   "ln_final.bias"};
  EXPECT_EQ(trainable, want);

  auto rn = cm::create_model(cm::load_model_spec("tiny-rn"), 0);
  cm::LoraPlan q;
  q.text = false;
  EXPECT_EQ(cm::apply_lora(*rn, q, 0).adapters, 4);  // attnpool q/k/v_proj, c_proj

  auto bad = cm::create_model(cm::load_model_spec("tiny-vit"), 0);
  cm::LoraPlan b;
  b.trainable = {"visual.ln_postt"};
  try {
    cm::apply_lora(*bad, b, 0);
    FAIL() << "expected InputError";
  } catch (const clipper::core::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("visual.ln_postt"), std::string::npos) << e.what();
  }
  cm::LoraPlan none;
  none.qkv = none.attn_out = none.mlp_fc = none.mlp_proj = false;
  EXPECT_THROW(cm::apply_lora(*bad, none, 0), clipper::core::InputError);
}

TEST(Lora, SameSeedSameAdapters) {
  auto a = cm::create_model(cm::load_model_spec("tiny-vit"), 0);
  auto b = cm::create_model(cm::load_model_spec("tiny-vit"), 0);
  cm::apply_lora(*a, {}, 7);
  cm::apply_lora(*b, {}, 7);
  const auto sa = a->state_dict(), sb = b->state_dict();
  ASSERT_EQ(sa.size(), sb.size());
  for (std::size_t i = 0; i < sa.size(); ++i) EXPECT_TRUE(at::equal(sa[i].second, sb[i].second));
}

TEST(Lora, MergedStateDictGivesTheSameFeatures) {
  // tiny-siglip: 2 timm blocks x (qkv, proj, fc1, fc2), the MAP head's q, kv, proj, fc1, fc2, and
  // 2 text blocks x 4 (its text_projection is "other", off by default).
  const std::map<std::string, std::int64_t> adapters = {
      {"tiny-vit", 28}, {"tiny-rn", 16}, {"tiny-siglip", 21}};
  for (const auto& [arch, count] : adapters) {
    const auto spec = cm::load_model_spec(arch);
    auto m = cm::create_model(spec, 0);
    cm::LoraPlan plan;
    plan.options = {4, 8.0, 0.0};
    cm::apply_lora(*m, plan, 1);
    randomize_b(*m, 3);
    m->eval();
    auto state = m->state_dict();
    EXPECT_EQ(cm::merge_lora_state(state, "test"), count) << arch;
    for (const auto& [n, t] : state) EXPECT_FALSE(cm::is_lora_tensor(n)) << n;
    auto plain = cm::create_model(spec, 5);
    plain->eval();
    {
      at::NoGradGuard g;
      const auto target = plain->state_dict();
      ASSERT_EQ(target.size(), state.size());
      for (std::size_t i = 0; i < state.size(); ++i) {
        ASSERT_EQ(target[i].first, state[i].first);
        target[i].second.copy_(state[i].second);
      }
    }
    at::manual_seed(0);
    const auto images = at::randn({2, 3, spec.image_size, spec.image_size});
    const auto tokens = tokens_for(2, spec.context_length);
    at::NoGradGuard g;
    EXPECT_TRUE(at::allclose(m->encode_image(images, false), plain->encode_image(images, false),
                             1e-4, 1e-5))
        << arch;
    EXPECT_TRUE(
        at::allclose(m->encode_text(tokens, false), plain->encode_text(tokens, false), 1e-4, 1e-5))
        << arch;
  }
}

TEST(Lora, MergeRejectsIncompleteAdapters) {
  std::vector<std::pair<std::string, at::Tensor>> t{{"a.c_fc.weight", at::zeros({4, 3})},
                                                    {"a.c_fc.lora.A", at::zeros({2, 3})},
                                                    {"a.c_fc.lora.scale", at::scalar_tensor(1.0)}};
  try {
    cm::merge_lora_state(t, "w.safetensors");
    FAIL() << "expected InputError";
  } catch (const clipper::core::InputError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("w.safetensors"), std::string::npos) << m;
    EXPECT_NE(m.find("a.c_fc.lora.B"), std::string::npos) << m;
  }
  std::vector<std::pair<std::string, at::Tensor>> bad{
      {"a.c_fc.weight", at::zeros({4, 3})},
      {"a.c_fc.lora.A", at::zeros({2, 5})},
      {"a.c_fc.lora.B", at::zeros({4, 2})},
      {"a.c_fc.lora.scale", at::scalar_tensor(1.0)}};
  EXPECT_THROW(cm::merge_lora_state(bad, "w"), clipper::core::InputError);
}

// Dropout inside checkpointed blocks: the recompute in backward must draw the forward's masks,
// or the gradients belong to another function than the loss.
TEST(Lora, GradCheckpointingReplaysAdapterDropout) {
  const auto spec = cm::load_model_spec("tiny-vit");
  std::map<std::string, at::Tensor> g[2];
  for (int ckpt = 0; ckpt < 2; ++ckpt) {
    auto m = cm::create_model(spec, 0);
    cm::LoraPlan plan;
    plan.options = {4, 8.0, 0.5};
    cm::apply_lora(*m, plan, 1);
    randomize_b(*m, 3);
    m->set_grad_checkpointing(ckpt == 1);
    m->train();
    at::manual_seed(11);
    const auto images = at::randn({2, 3, 32, 32});
    const auto tokens = tokens_for(2, 32);
    const auto out = m->forward(images, tokens);
    at::matmul(out.image_features, out.text_features.t()).logsumexp(1).sum().backward();
    for (const auto& p : m->named_parameters())
      if (p.value().grad().defined()) g[ckpt][p.key()] = p.value().grad();
  }
  ASSERT_EQ(g[0].size(), g[1].size());
  for (const auto& [n, t] : g[0]) EXPECT_TRUE(at::allclose(t, g[1].at(n), 1e-5, 1e-6)) << n;
}
