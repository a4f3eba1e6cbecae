#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cmath>
#include <set>

#include "clipper/core/error.hpp"
#include "clipper/optim/adamw.hpp"
#include "clipper/optim/param_groups.hpp"
#include "clipper/optim/schedule.hpp"
#include "test_util.hpp"

using namespace clipper;

namespace {

struct TinyImpl : torch::nn::Module {
  TinyImpl() {
    fc = register_module("fc", torch::nn::Linear(4, 3));
    ln_1 = register_module("ln_1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({3})));
    logit_scale = register_parameter("logit_scale", torch::ones({}));
    class_embedding = register_parameter("class_embedding", torch::randn({3}));
    proj = register_parameter("proj", torch::randn({3, 2}));
  }
  torch::nn::Linear fc{nullptr};
  torch::nn::LayerNorm ln_1{nullptr};
  at::Tensor logit_scale, class_embedding, proj;
};

// Plain AdamW (decoupled weight decay, bias-corrected), written from the paper's update rule.
void reference_adamw(at::Tensor p, at::Tensor g, at::Tensor m, at::Tensor v, int t, double lr,
                     double b1, double b2, double eps, double wd) {
  p.mul_(1 - lr * wd);
  m.mul_(b1).add_(g, 1 - b1);
  v.mul_(b2).addcmul_(g, g, 1 - b2);
  const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
  p.addcdiv_(m / bc1, (v / bc2).sqrt().add_(eps), -lr);
}

}  // namespace

TEST(ParamGroups, FollowOpenClipsRule) {
  TinyImpl m;
  auto groups = optim::make_param_groups(m, 0.2);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_DOUBLE_EQ(groups[0].weight_decay, 0.2);
  EXPECT_DOUBLE_EQ(groups[1].weight_decay, 0.0);
  EXPECT_EQ(groups[0].names, (std::vector<std::string>{"proj", "fc.weight"}));
  EXPECT_EQ(groups[1].names, (std::vector<std::string>{"logit_scale", "class_embedding", "fc.bias",
                                                       "ln_1.weight", "ln_1.bias"}));
  m.proj.set_requires_grad(false);  // a locked tensor leaves the groups
  groups = optim::make_param_groups(m, 0.2);
  EXPECT_EQ(groups[0].names, (std::vector<std::string>{"fc.weight"}));
}

// A CLIP-shaped module: the names open_clip's rules look at.
struct ClipNamesImpl : torch::nn::Module {
  struct VisualImpl : torch::nn::Module {
    VisualImpl() {
      class_embedding = register_parameter("class_embedding", torch::randn({4}));
      positional_embedding = register_parameter("positional_embedding", torch::randn({5, 4}));
      proj = register_parameter("proj", torch::randn({4, 2}));
      ln_post = register_module("ln_post", torch::nn::LayerNorm(torch::nn::LayerNormOptions({4})));
    }
    at::Tensor class_embedding, positional_embedding, proj;
    torch::nn::LayerNorm ln_post{nullptr};
  };
  ClipNamesImpl() {
    positional_embedding = register_parameter("positional_embedding", torch::randn({6, 4}));
    logit_scale = register_parameter("logit_scale", torch::ones({}));
    visual = register_module("visual", std::make_shared<VisualImpl>());
  }
  at::Tensor positional_embedding, logit_scale;
  std::shared_ptr<VisualImpl> visual;
};

// optim.no_decay: open_clip 3.3.0's name rule decays the positional embeddings, open_clip main's
// (1-dim plus CLIP's no_weight_decay() set) does not; auto is main's with layer decay only.
TEST(ParamGroups, NoDecayRuleOpenClip3OrModern) {
  ClipNamesImpl m;
  config::OptimConfig o;
  auto undecayed = [&](const config::OptimConfig& c) {
    std::set<std::string> names;
    for (const auto& g : optim::make_param_groups(m, c))
      if (g.weight_decay == 0.0) names.insert(g.names.begin(), g.names.end());
    return names;
  };
  const std::set<std::string> v3 = {"logit_scale", "visual.class_embedding",
                                    "visual.ln_post.weight", "visual.ln_post.bias"};
  std::set<std::string> modern = v3;
  modern.insert({"positional_embedding", "visual.positional_embedding"});
  EXPECT_EQ(optim::no_decay_rule(o), config::NoDecay::openclip3);
  EXPECT_EQ(undecayed(o), v3);
  o.no_decay = config::NoDecay::modern;
  EXPECT_EQ(undecayed(o), modern);
  o.no_decay = config::NoDecay::automatic;
  o.text_layer_decay = 0.9;  // layer decay: open_clip main's rule unless set
  EXPECT_EQ(optim::no_decay_rule(o), config::NoDecay::modern);
  EXPECT_EQ(undecayed(o), modern);
  o.no_decay = config::NoDecay::openclip3;
  EXPECT_EQ(undecayed(o), v3);
  EXPECT_EQ(config::parse_choice<config::NoDecay>("modern"), config::NoDecay::modern);
}

// beta2 and eps left unset (< 0) take OpenCLIP's defaults for the model's family.
TEST(AdamW, OptionsFollowTheModelFamilyUnlessSet) {
  config::OptimConfig o;
  auto a = optim::adamw_options(o, "RN50");
  EXPECT_DOUBLE_EQ(a.beta1, 0.9);
  EXPECT_DOUBLE_EQ(a.beta2, 0.999);
  EXPECT_DOUBLE_EQ(a.eps, 1e-8);
  a = optim::adamw_options(o, "tiny-rn");
  EXPECT_DOUBLE_EQ(a.beta2, 0.999);
  a = optim::adamw_options(o, "ViT-B-32");
  EXPECT_DOUBLE_EQ(a.beta2, 0.98);
  EXPECT_DOUBLE_EQ(a.eps, 1e-6);
  o.beta2 = 0.95;
  o.eps = 1e-7;
  a = optim::adamw_options(o, "RN50");
  EXPECT_DOUBLE_EQ(a.beta2, 0.95);
  EXPECT_DOUBLE_EQ(a.eps, 1e-7);
}

TEST(AdamW, MatchesReferenceUpdateInDouble) {
  torch::manual_seed(0);
  auto p = torch::randn({5, 4}, torch::kFloat64).requires_grad_(true);
  auto ref = p.detach().clone();
  auto m = torch::zeros_like(ref), v = torch::zeros_like(ref);
  optim::ParamGroup g{{"w"}, {p}, 0.1};
  optim::AdamW opt({g}, {0.9, 0.98, 1e-6});
  for (int t = 1; t <= 5; ++t) {
    auto grad = torch::randn({5, 4}, torch::kFloat64);
    p.mutable_grad() = grad.clone();
    opt.step(0.01 * t);
    reference_adamw(ref, grad, m, v, t, 0.01 * t, 0.9, 0.98, 1e-6, 0.1);
    EXPECT_LT((p.detach() - ref).abs().max().item<double>(), 1e-12) << "step " << t;
  }
}

// The foreach path (optim.fused = false) and the fused kernel, against the same reference; a
// found_inf of 1 leaves either untouched, step count included.
TEST(AdamW, ForeachPathMatchesReferenceAndSkipsOnFoundInf) {
  for (const bool fused : {true, false}) {
    torch::manual_seed(1);
    auto p = torch::randn({6, 3}, torch::kFloat64).requires_grad_(true);
    auto ref = p.detach().clone();
    auto m = torch::zeros_like(ref), v = torch::zeros_like(ref);
    optim::AdamW opt({optim::ParamGroup{{"w"}, {p}, 0.1}}, {0.9, 0.98, 1e-6, fused});
    const auto no = torch::zeros({}, torch::kFloat), yes = torch::ones({}, torch::kFloat);
    int t = 0;
    for (int i = 1; i <= 6; ++i) {
      auto grad = torch::randn({6, 3}, torch::kFloat64);
      p.mutable_grad() = grad.clone();
      const bool skip = i == 3;
      const auto before = p.detach().clone();
      opt.step(0.01 * i, skip ? yes : no);
      if (skip) {
        EXPECT_TRUE(at::equal(p.detach(), before)) << "fused=" << fused;
        continue;
      }
      reference_adamw(ref, grad, m, v, ++t, 0.01 * i, 0.9, 0.98, 1e-6, 0.1);
      EXPECT_LT((p.detach() - ref).abs().max().item<double>(), 1e-12)
          << "fused=" << fused << " step " << i;
    }
    for (const auto& [name, s] : opt.state())
      if (name == "w.step") EXPECT_EQ(s.item<double>(), 5.0) << "fused=" << fused;
  }
}

// A group's lr_scale multiplies the step's learning rate (weight decay included), in the fused
// kernel and in the foreach path, and leaves the other groups at the step's rate.
TEST(AdamW, GroupLrScaleScalesTheLearningRate) {
  for (const bool fused : {true, false}) {
    torch::manual_seed(2);
    auto a = torch::randn({4, 3}, torch::kFloat64).requires_grad_(true);
    auto b = torch::randn({4, 3}, torch::kFloat64).requires_grad_(true);
    auto ra = a.detach().clone(), rb = b.detach().clone();
    auto ma = torch::zeros_like(ra), va = torch::zeros_like(ra);
    auto mb = torch::zeros_like(rb), vb = torch::zeros_like(rb);
    optim::ParamGroup ga{{"a"}, {a}, 0.1, 0.25}, gb{{"b"}, {b}, 0.1};
    optim::AdamW opt({ga, gb}, {0.9, 0.98, 1e-6, fused});
    for (int t = 1; t <= 4; ++t) {
      auto grad_a = torch::randn({4, 3}, torch::kFloat64);
      auto grad_b = torch::randn({4, 3}, torch::kFloat64);
      a.mutable_grad() = grad_a.clone();
      b.mutable_grad() = grad_b.clone();
      opt.step(0.04);
      reference_adamw(ra, grad_a, ma, va, t, 0.01, 0.9, 0.98, 1e-6, 0.1);
      reference_adamw(rb, grad_b, mb, vb, t, 0.04, 0.9, 0.98, 1e-6, 0.1);
      EXPECT_LT((a.detach() - ra).abs().max().item<double>(), 1e-12) << "fused=" << fused;
      EXPECT_LT((b.detach() - rb).abs().max().item<double>(), 1e-12) << "fused=" << fused;
    }
  }
}

// Layer decay without the towers' structure: names outside both towers keep scale 1, and the
// factors are checked.
TEST(ParamGroups, LayerDecayChecksItsFactors) {
  TinyImpl m;
  config::OptimConfig o;
  o.image_layer_decay = 0.5;
  for (const auto& [name, scale] : optim::lr_scales(m, o)) EXPECT_EQ(scale, 1.0) << name;
  EXPECT_EQ(optim::make_param_groups(m, o).size(), 2u);
  o.image_layer_decay = 0.0;
  EXPECT_NE(test::error_of([&] {
              optim::lr_scales(m, o);
            }).find("optim.image_layer_decay must be in (0, 1], got 0"),
            std::string::npos);
  o.image_layer_decay = 1.5;
  EXPECT_THROW(optim::lr_scales(m, o), core::InputError);
  o.image_layer_decay = 1.0;
  o.text_lr = -1.0;
  EXPECT_NE(test::error_of([&] { optim::lr_scales(m, o); }).find("optim.text_lr must be >= 0"),
            std::string::npos);
}

TEST(AdamW, StateRoundTripContinuesIdentically) {
  torch::manual_seed(1);
  TinyImpl a, b;
  {
    torch::NoGradGuard ng;
    for (auto& item : b.named_parameters()) item.value().copy_(a.named_parameters()[item.key()]);
  }
  optim::AdamW oa(optim::make_param_groups(a, 0.1), {});
  optim::AdamW ob(optim::make_param_groups(b, 0.1), {});
  auto run_step = [](TinyImpl& m, optim::AdamW& o, const at::Tensor& x) {
    o.zero_grad();
    auto y = m.ln_1(m.fc(x)).matmul(m.proj).sum() * m.logit_scale + m.class_embedding.sum();
    y.backward();
    o.step(1e-2);
  };
  auto x1 = torch::randn({2, 4}), x2 = torch::randn({2, 4});
  run_step(a, oa, x1);
  run_step(b, ob, x1);
  // b's optimizer state is replaced by a copy of a's: the next steps must agree bit for bit.
  std::vector<std::pair<std::string, at::Tensor>> saved;
  for (auto& [n, t] : oa.state()) saved.emplace_back(n, t.clone());
  optim::AdamW ob2(optim::make_param_groups(b, 0.1), {});
  ob2.load_state(saved);
  run_step(a, oa, x2);
  run_step(b, ob2, x2);
  for (auto& item : a.named_parameters())
    EXPECT_TRUE(torch::equal(item.value(), b.named_parameters()[item.key()])) << item.key();
  auto bad = saved;
  bad.pop_back();
  EXPECT_THROW(ob2.load_state(bad), core::InputError);
}

TEST(Schedule, WarmupCosineConstCooldown) {
  config::OptimConfig o;
  o.lr = 1.0;
  o.warmup_steps = 10;
  EXPECT_DOUBLE_EQ(optim::learning_rate(o, 0, 110), 0.1);
  EXPECT_DOUBLE_EQ(optim::learning_rate(o, 9, 110), 1.0);
  EXPECT_DOUBLE_EQ(optim::learning_rate(o, 10, 110), 1.0);
  EXPECT_NEAR(optim::learning_rate(o, 60, 110), 0.5, 1e-12);
  EXPECT_NEAR(optim::learning_rate(o, 110, 110), 0.0, 1e-12);
  o.schedule = config::LrSchedule::constant;
  EXPECT_DOUBLE_EQ(optim::learning_rate(o, 100, 110), 1.0);
  o.schedule = config::LrSchedule::const_cooldown;
  o.cooldown_steps = 20;
  o.cooldown_end_lr = 0.1;
  EXPECT_DOUBLE_EQ(optim::learning_rate(o, 89, 110), 1.0);
  EXPECT_NEAR(optim::learning_rate(o, 100, 110), 0.55, 1e-12);
  EXPECT_NEAR(optim::learning_rate(o, 110, 110), 0.1, 1e-12);
  o.cooldown_power = 2.0;  // halfway through the cooldown: 0.5^2 of the way from the end lr
  EXPECT_NEAR(optim::learning_rate(o, 100, 110), 0.1 + 0.25 * 0.9, 1e-12);
  EXPECT_NEAR(optim::learning_rate(o, 110, 110), 0.1, 1e-12);
}
