// Gradient checkpointing and tower locking (LiT).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include "clipper/model/clip.hpp"

namespace cm = clipper::model;

namespace {

at::Tensor tokens_for(std::int64_t b, std::int64_t l) {
  auto t = at::randint(1, 49000, {b, l}, at::kLong);
  for (std::int64_t i = 0; i < b; ++i) t[i][5 + i] = 49407;
  return t;
}

// A scalar that depends on both towers' features.
at::Tensor loss_of(cm::Clip& m, const at::Tensor& images, const at::Tensor& tokens) {
  const auto out = m->forward(images, tokens);
  return (out.logit_scale * at::matmul(out.image_features, out.text_features.t()))
      .logsumexp(1)
      .sum();
}

std::map<std::string, at::Tensor> grads(cm::Clip& m) {
  std::map<std::string, at::Tensor> g;
  for (const auto& p : m->named_parameters())
    if (p.value().grad().defined()) g[p.key()] = p.value().grad().clone();
  return g;
}

std::set<std::string> trainable(cm::Clip& m) {
  std::set<std::string> s;
  for (const auto& p : m->named_parameters())
    if (p.value().requires_grad()) s.insert(p.key());
  return s;
}

// True when the autograd graph behind `t` holds a node whose name contains `what`.
bool graph_has(const at::Tensor& t, const std::string& what) {
  std::vector<torch::autograd::Node*> todo{t.grad_fn().get()};
  std::set<torch::autograd::Node*> seen;
  while (!todo.empty()) {
    auto* n = todo.back();
    todo.pop_back();
    if (!n || !seen.insert(n).second) continue;
    if (n->name().find(what) != std::string::npos) return true;
    for (const auto& e : n->next_edges()) todo.push_back(e.function.get());
  }
  return false;
}

bool starts(const std::string& s, const std::string& p) {
  return s.rfind(p, 0) == 0;
}

}  // namespace

TEST(GradCheckpointing, SameGradientsAsPlainBackward) {
  at::manual_seed(0);
  const auto images = at::randn({3, 3, 32, 32});
  const auto tokens = tokens_for(3, 32);
  std::map<std::string, at::Tensor> plain, ckpt;
  for (bool on : {false, true}) {
    auto m = cm::create_model(cm::load_model_spec("tiny-vit"), 5);
    m->train();
    m->set_grad_checkpointing(on);
    EXPECT_EQ(m->grad_checkpointing(), on);
    loss_of(m, images, tokens).backward();
    (on ? ckpt : plain) = grads(m);
  }
  ASSERT_EQ(plain.size(), ckpt.size());
  EXPECT_GT(plain.size(), 50u);
  for (const auto& [name, g] : plain) {
    ASSERT_TRUE(ckpt.count(name)) << name;
    EXPECT_TRUE(at::allclose(g, ckpt.at(name), 1e-5, 1e-6))
        << name << " max diff " << (g - ckpt.at(name)).abs().max().item<double>();
  }
}

// The SigLIP towers: timm blocks (their own names, the same checkpointing) and the bidirectional
// text tower.
TEST(GradCheckpointing, SameGradientsAsPlainBackwardSiglip) {
  at::manual_seed(0);
  const auto images = at::randn({3, 3, 32, 32});
  const auto tokens = tokens_for(3, 16);
  std::map<std::string, at::Tensor> plain, ckpt;
  for (bool on : {false, true}) {
    auto m = cm::create_model(cm::load_model_spec("tiny-siglip"), 5);
    m->train();
    m->set_grad_checkpointing(on);
    loss_of(m, images, tokens).backward();
    (on ? ckpt : plain) = grads(m);
  }
  ASSERT_EQ(plain.size(), ckpt.size());
  EXPECT_TRUE(plain.count("visual.trunk.blocks.0.attn.qkv.weight"));
  EXPECT_TRUE(plain.count("visual.trunk.attn_pool.latent"));
  for (const auto& [name, g] : plain)
    EXPECT_TRUE(at::allclose(g, ckpt.at(name), 1e-5, 1e-6))
        << name << " max diff " << (g - ckpt.at(name)).abs().max().item<double>();
}

TEST(GradCheckpointing, UnlockedLastBlockGetsGradientsWhenItsInputNeedsNone) {
  at::manual_seed(1);
  const auto images = at::randn({2, 3, 32, 32});
  const auto tokens = tokens_for(2, 32);
  std::map<std::string, at::Tensor> plain, ckpt;
  for (bool on : {false, true}) {
    auto m = cm::create_model(cm::load_model_spec("tiny-vit"), 6);
    m->train();
    m->lock_image_tower(2);  // last block + ln_post, and proj
    m->set_grad_checkpointing(on);
    loss_of(m, images, tokens).backward();
    (on ? ckpt : plain) = grads(m);
  }
  EXPECT_TRUE(plain.count("visual.transformer.resblocks.3.attn.in_proj_weight"));
  EXPECT_FALSE(plain.count("visual.transformer.resblocks.2.attn.in_proj_weight"));
  ASSERT_EQ(plain.size(), ckpt.size());
  for (const auto& [name, g] : plain)
    EXPECT_TRUE(at::allclose(g, ckpt.at(name), 1e-5, 1e-6)) << name;
}

TEST(GradCheckpointing, OnlyInTraining) {
  auto m = cm::create_model(cm::load_model_spec("tiny-vit"), 0);
  m->set_grad_checkpointing(true);
  const auto images = at::randn({1, 3, 32, 32});
  m->train();
  EXPECT_TRUE(graph_has(m->encode_image(images), "CheckpointFunction"));
  EXPECT_TRUE(graph_has(m->encode_text(tokens_for(1, 32)), "CheckpointFunction"));
  m->eval();
  const auto a = m->encode_image(images);
  EXPECT_TRUE(a.requires_grad());
  EXPECT_FALSE(graph_has(a, "CheckpointFunction"));
  m->train();
  m->set_grad_checkpointing(false);
  EXPECT_FALSE(graph_has(m->encode_image(images), "CheckpointFunction"));
}

TEST(Lock, ImageTowerViTGroups) {
  auto m = cm::create_model(cm::load_model_spec("tiny-vit"), 0);
  m->lock_image_tower(0);
  for (const auto& n : trainable(m)) EXPECT_FALSE(starts(n, "visual.")) << n;
  EXPECT_TRUE(trainable(m).count("token_embedding.weight"));

  m->lock_image_tower(1);  // proj only
  std::set<std::string> visual;
  for (const auto& n : trainable(m))
    if (starts(n, "visual.")) visual.insert(n);
  EXPECT_EQ(visual, std::set<std::string>{"visual.proj"});

  m->lock_image_tower(2);  // + last block and ln_post
  visual.clear();
  for (const auto& n : trainable(m))
    if (starts(n, "visual.")) visual.insert(n);
  EXPECT_TRUE(visual.count("visual.ln_post.weight"));
  EXPECT_TRUE(visual.count("visual.transformer.resblocks.3.mlp.c_fc.weight"));
  EXPECT_FALSE(visual.count("visual.transformer.resblocks.2.mlp.c_fc.weight"));
  EXPECT_FALSE(visual.count("visual.conv1.weight"));

  m->lock_image_tower(100);  // more groups than there are: all unlocked
  for (const auto& p : m->named_parameters()) EXPECT_TRUE(p.value().requires_grad()) << p.key();
}

// timm's groups: [patch_embed, pos_embed], each block, [norm], [attn_pool].
TEST(Lock, ImageTowerTimmGroups) {
  auto m = cm::create_model(cm::load_model_spec("tiny-siglip"), 0);
  auto visual = [&] {
    std::set<std::string> v;
    for (const auto& n : trainable(m))
      if (starts(n, "visual.")) v.insert(n);
    return v;
  };
  m->lock_image_tower(0);
  EXPECT_TRUE(visual().empty());
  EXPECT_TRUE(trainable(m).count("text.token_embedding.weight"));
  m->lock_image_tower(1);
  for (const auto& n : visual()) EXPECT_TRUE(starts(n, "visual.trunk.attn_pool.")) << n;
  EXPECT_TRUE(visual().count("visual.trunk.attn_pool.latent"));
  m->lock_image_tower(3);  // + norm, the last block
  EXPECT_TRUE(visual().count("visual.trunk.norm.weight"));
  EXPECT_TRUE(visual().count("visual.trunk.blocks.1.attn.qkv.weight"));
  EXPECT_FALSE(visual().count("visual.trunk.blocks.0.attn.qkv.weight"));
  EXPECT_FALSE(visual().count("visual.trunk.pos_embed"));
  m->lock_text_tower(1);  // the projection only
  std::set<std::string> text;
  for (const auto& n : trainable(m))
    if (starts(n, "text.")) text.insert(n);
  EXPECT_EQ(text,
            (std::set<std::string>{"text.text_projection.weight", "text.text_projection.bias"}));
}

TEST(Lock, ImageTowerResNetGroupsAndFrozenBatchNorm) {
  auto m = cm::create_model(cm::load_model_spec("tiny-rn"), 0);
  m->lock_image_tower(1, /*freeze_bn_stats=*/true);
  for (const auto& n : trainable(m))
    if (starts(n, "visual.")) EXPECT_TRUE(starts(n, "visual.attnpool.")) << n;
  EXPECT_TRUE(trainable(m).count("visual.attnpool.q_proj.weight"));
  m->train();
  const auto before = m->visual_resnet->bn1->running_mean.clone();
  m->encode_image(at::randn({2, 3, 64, 64}) * 3 + 1);
  EXPECT_TRUE(at::equal(before, m->visual_resnet->bn1->running_mean));
  EXPECT_TRUE(m->is_training());

  auto u = cm::create_model(cm::load_model_spec("tiny-rn"), 0);
  u->lock_image_tower(2);  // layer4 + attnpool; statistics keep updating
  EXPECT_TRUE(trainable(u).count("visual.layer4.0.conv2.weight"));
  EXPECT_FALSE(trainable(u).count("visual.layer3.0.conv2.weight"));
  u->train();
  const auto b2 = u->visual_resnet->bn1->running_mean.clone();
  u->encode_image(at::randn({2, 3, 64, 64}) * 3 + 1);
  EXPECT_FALSE(at::equal(b2, u->visual_resnet->bn1->running_mean));
}

TEST(Lock, TextTowerGroups) {
  auto m = cm::create_model(cm::load_model_spec("tiny-vit"), 0);
  m->lock_text_tower(0);
  const auto t0 = trainable(m);
  for (const auto& n : t0) EXPECT_TRUE(starts(n, "visual.") || n == "logit_scale") << n;
  m->lock_text_tower(1);
  EXPECT_TRUE(trainable(m).count("text_projection"));
  EXPECT_FALSE(trainable(m).count("ln_final.weight"));
  m->lock_text_tower(2);
  EXPECT_TRUE(trainable(m).count("ln_final.weight"));
  EXPECT_TRUE(trainable(m).count("transformer.resblocks.2.attn.in_proj_weight"));
  EXPECT_FALSE(trainable(m).count("transformer.resblocks.1.attn.in_proj_weight"));
  EXPECT_FALSE(trainable(m).count("token_embedding.weight"));
}
