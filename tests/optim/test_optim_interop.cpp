// Interop with open_clip (label interop): the per-parameter learning rates and weight decays of
// clipper's optimizer groups (layer-wise LR decay, per-tower rates, LiT locking) against the
// groups open_clip's rule builds for the same model (tests/optim/openclip_optim.py says which
// rule: open_clip 3.3.0 has no layer decay, so it is open_clip main's, reimplemented), and the
// const-cooldown schedule against open_clip_train.scheduler.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "clipper/io/openclip.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/optim/param_groups.hpp"
#include "clipper/optim/schedule.hpp"
#include "test_util.hpp"

namespace cm = clipper::model;
namespace co = clipper::optim;
using clipper::config::OptimConfig;

namespace {

std::string script() {
  return clipper::test::python() + " " +
         clipper::test::source_path("tests/optim/openclip_optim.py");
}

nlohmann::json run_json(const std::string& cmd) {
  const auto r = clipper::test::run(cmd + " 2>/dev/null");
  EXPECT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;
  return nlohmann::json::parse(r.output);
}

struct Case {
  std::string model;
  OptimConfig optim;
  std::int64_t lock_image = -1, lock_text = -1;  // unlocked groups; -1: no lock
};

void expect_groups_match(const Case& c) {
  clipper::test::TempDir dir;
  const auto spec = cm::load_model_spec(c.model);
  cm::Clip model(spec);
  if (c.lock_image >= 0) model->lock_image_tower(c.lock_image);
  if (c.lock_text >= 0) model->lock_text_tower(c.lock_text);
  const auto cfg = dir.write("cfg.json", clipper::io::openclip_model_cfg_json(spec));
  const auto& o = c.optim;
  std::ostringstream cmd;
  cmd.precision(17);
  cmd << script() << " groups --model-cfg " << cfg << " --lr " << o.lr << " --wd " << o.weight_decay
      << " --image-decay " << o.image_layer_decay << " --text-decay " << o.text_layer_decay
      << " --image-lr " << o.image_lr << " --text-lr " << o.text_lr << " --lock-image "
      << c.lock_image << " --lock-text " << c.lock_text << " --no-decay "
      << clipper::config::name_of(co::no_decay_rule(o));
  const auto py = run_json(cmd.str());
  const auto groups = co::make_param_groups(*model, o);
  std::set<std::string> seen;
  for (const auto& g : groups)
    for (const auto& name : g.names) {
      seen.insert(name);
      ASSERT_TRUE(py["params"].contains(name)) << name << " is trainable in clipper only";
      const auto& p = py["params"][name];
      const double lr = o.lr * g.lr_scale, want = p["lr"].get<double>();
      EXPECT_NEAR(lr, want, 1e-12 * want) << c.model << " " << name;
      EXPECT_EQ(g.weight_decay, p["weight_decay"].get<double>()) << c.model << " " << name;
    }
  EXPECT_EQ(seen.size(), py["params"].size()) << "trainable parameters differ";
  EXPECT_EQ(static_cast<int>(groups.size()), py["groups"].get<int>()) << "group count";
}

}  // namespace

TEST(OptimInterop, LayerDecayAndTowerRatesTinyViT) {
  Case c{"tiny-vit", {}};
  c.optim.lr = 1e-3;
  c.optim.image_layer_decay = 0.75;
  c.optim.text_layer_decay = 0.65;
  c.optim.image_lr = 0.5;
  c.optim.text_lr = 2.0;
  expect_groups_match(c);
}

TEST(OptimInterop, LayerDecayWithLockedTowersTinyViT) {
  Case c{"tiny-vit", {}, /*lock_image=*/3, /*lock_text=*/2};
  c.optim.image_layer_decay = 0.8;
  c.optim.text_layer_decay = 0.9;
  expect_groups_match(c);
}

TEST(OptimInterop, LayerDecayModifiedResNet) {
  // open_clip 3.3.0 cannot lock a ModifiedResNet partly: the text tower is locked instead.
  Case c{"tiny-rn", {}, /*lock_image=*/-1, /*lock_text=*/3};
  c.optim.image_layer_decay = 0.7;
  c.optim.text_lr = 0.1;
  expect_groups_match(c);
}

TEST(OptimInterop, NoDecayIsOpenClipsTwoGroups) {
  Case c{"tiny-vit", {}};
  expect_groups_match(c);
}

// optim.no_decay modern is open_clip main's rule over the model's own no_weight_decay() (the
// positional and class embeddings undecayed), with and without layer decay; openclip3 with
// layer decay keeps 3.3.0's name rule.
TEST(OptimInterop, NoDecayRulesMatchOpenClip3AndMain) {
  for (const char* model : {"tiny-vit", "tiny-rn"}) {
    Case modern{model, {}};
    modern.optim.no_decay = clipper::config::NoDecay::modern;
    expect_groups_match(modern);
    Case v3{model, {}};
    v3.optim.image_layer_decay = 0.8;
    v3.optim.no_decay = clipper::config::NoDecay::openclip3;
    expect_groups_match(v3);
  }
}
TEST(OptimInterop, ConstCooldownMatchesOpenClipScheduler) {
  for (const double power : {1.0, 0.5, 2.0}) {
    OptimConfig o;
    o.lr = 3e-4;
    o.warmup_steps = 7;
    o.schedule = clipper::config::LrSchedule::const_cooldown;
    o.cooldown_steps = 25;
    o.cooldown_end_lr = 1e-5;
    o.cooldown_power = power;
    const std::int64_t total = 60;
    std::ostringstream cmd;
    cmd.precision(17);
    cmd << script() << " schedule --lr " << o.lr << " --warmup " << o.warmup_steps << " --steps "
        << total << " --cooldown " << o.cooldown_steps << " --power " << power << " --end "
        << o.cooldown_end_lr;
    const auto py = run_json(cmd.str());
    ASSERT_EQ(py.size(), static_cast<std::size_t>(total));
    for (std::int64_t s = 0; s < total; ++s) {
      const double want = py[s].get<double>();
      EXPECT_NEAR(co::learning_rate(o, s, total), want, 1e-15 + 1e-12 * want)
          << "power " << power << " step " << s;
    }
  }
}

// Layer decay over the SigLIP towers' names (no Python: open_clip main's layer_groups for a timm
// trunk are timm's group_matcher, [patch_embed, pos_embed], each block, [norm], [attn_pool]; the
// text tower sits under text.).
TEST(LayerDecay, SiglipTowersFollowTimmsAndTheTextTowersGroups) {
  cm::Clip model(cm::load_model_spec("tiny-siglip"));  // 2 blocks per tower
  OptimConfig o;
  o.image_layer_decay = 0.5;
  o.text_layer_decay = 0.25;
  std::map<std::string, double> scale;
  for (const auto& [name, s] : co::lr_scales(*model, o)) scale[name] = s;
  EXPECT_EQ(scale.at("visual.trunk.attn_pool.latent"), 1.0);
  EXPECT_EQ(scale.at("visual.trunk.norm.weight"), 0.5);
  EXPECT_EQ(scale.at("visual.trunk.blocks.1.mlp.fc1.weight"), 0.25);
  EXPECT_EQ(scale.at("visual.trunk.blocks.0.attn.qkv.weight"), 0.125);
  EXPECT_EQ(scale.at("visual.trunk.pos_embed"), 0.0625);
  EXPECT_EQ(scale.at("visual.trunk.patch_embed.proj.weight"), 0.0625);
  EXPECT_EQ(scale.at("text.text_projection.bias"), 1.0);
  EXPECT_EQ(scale.at("text.ln_final.weight"), 0.25);
  EXPECT_EQ(scale.at("text.transformer.resblocks.1.attn.in_proj_weight"), 0.25);
  EXPECT_EQ(scale.at("text.transformer.resblocks.0.attn.in_proj_weight"), 0.0625);
  EXPECT_EQ(scale.at("text.token_embedding.weight"), 0.015625);
  EXPECT_EQ(scale.at("logit_bias"), 1.0);
  EXPECT_TRUE(co::excluded_from_decay("visual.trunk.pos_embed",
                                      model->visual->named_parameters()["trunk.pos_embed"],
                                      clipper::config::NoDecay::modern));
}

// A NaFlex trunk (timm's NaFlexVit names): its embeds (patch Linear, position table) are the first
// group, as timm's group_matcher '^embeds', and the table is not decayed (no_weight_decay).
TEST(LayerDecay, NaflexTrunkFollowsTimmsGroups) {
  cm::Clip model(cm::load_model_spec("tiny-naflex"));  // 2 blocks
  OptimConfig o;
  o.image_layer_decay = 0.5;
  std::map<std::string, double> scale;
  for (const auto& [name, s] : co::lr_scales(*model, o)) scale[name] = s;
  EXPECT_EQ(scale.at("visual.trunk.attn_pool.latent"), 1.0);
  EXPECT_EQ(scale.at("visual.trunk.norm.weight"), 0.5);
  EXPECT_EQ(scale.at("visual.trunk.blocks.1.mlp.fc1.weight"), 0.25);
  EXPECT_EQ(scale.at("visual.trunk.embeds.pos_embed"), 0.0625);
  EXPECT_EQ(scale.at("visual.trunk.embeds.proj.weight"), 0.0625);
  EXPECT_TRUE(co::excluded_from_decay("visual.trunk.embeds.pos_embed",
                                      model->visual->named_parameters()["trunk.embeds.pos_embed"],
                                      clipper::config::NoDecay::modern));
}
