#include <gtest/gtest.h>

#include "clipper/config/loader.hpp"
#include "clipper/config/schema.hpp"
#include "clipper/core/error.hpp"
#include "test_util.hpp"

using namespace clipper::config;
using clipper::core::InputError;
using clipper::test::error_of;

namespace {

bool has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

TEST(Config, DefaultsComeFromTheStructs) {
  Config c;
  apply_yaml(c, "", "empty.yaml");
  EXPECT_DOUBLE_EQ(c.optim.lr, 5e-4);
  EXPECT_EQ(c.train.batch_size, 64);
  EXPECT_EQ(c.loss.kind, LossKind::clip);
}

TEST(Config, EveryKeyIsDeclaredOnceWithHelp) {
  std::set<std::string> seen;
  for (const auto& k : keys()) {
    EXPECT_TRUE(seen.insert(k.key).second) << "declared twice: " << k.key;
    EXPECT_FALSE(k.help.empty()) << k.key;
    EXPECT_NE(k.key.find('.'), std::string::npos) << k.key;
  }
  EXPECT_GT(keys().size(), 50u);
}

TEST(Config, PrecedenceDefaultsFilesThenSet) {
  clipper::test::TempDir d;
  const auto a = d.write("a.yaml", "model:\n  name: ViT-B-32\noptim:\n  lr: 0.01\n  eps: 1.0e-8\n");
  const auto b = d.write("b.yaml", "optim:\n  lr: 0.02\ntrain:\n  batch_size: 8\n");
  Config c = load({a, b}, {"train.batch_size=16"});
  EXPECT_EQ(c.model.name, "ViT-B-32");
  EXPECT_DOUBLE_EQ(c.optim.lr, 0.02);           // later file wins
  EXPECT_DOUBLE_EQ(c.optim.eps, 1e-8);          // earlier file kept where the later is silent
  EXPECT_EQ(c.train.batch_size, 16);            // --set wins over files
  EXPECT_DOUBLE_EQ(c.optim.weight_decay, 0.2);  // default
}

// OpenCLIP's AdamW defaults per model family (open_clip_train/params.py), unless a file sets them.
TEST(Config, AdamWDefaultsFollowTheModelFamily) {
  clipper::test::TempDir d;
  const auto rn = d.write("rn.yaml", "model:\n  name: RN50\n");
  Config c = load({rn});
  EXPECT_DOUBLE_EQ(c.optim.beta1, 0.9);
  EXPECT_DOUBLE_EQ(c.optim.beta2, 0.999);
  EXPECT_DOUBLE_EQ(c.optim.eps, 1e-8);
  c = load({rn}, {"model.name=tiny-fmnist-vit"});
  EXPECT_DOUBLE_EQ(c.optim.beta2, 0.98);
  EXPECT_DOUBLE_EQ(c.optim.eps, 1e-6);
  const auto set = d.write("set.yaml", "model:\n  name: tiny-rn\noptim:\n  eps: 1.0e-6\n");
  c = load({set});
  EXPECT_DOUBLE_EQ(c.optim.beta2, 0.999);  // the family's
  EXPECT_DOUBLE_EQ(c.optim.eps, 1e-6);     // the file's
  c = load({set}, {"optim.beta2=0.9"});
  EXPECT_DOUBLE_EQ(c.optim.beta2, 0.9);
  // The dumped config holds the resolved values, so a run folder's config.yaml reads back as is.
  Config back;
  apply_yaml(back, to_yaml(load({rn})), "dumped.yaml");
  EXPECT_DOUBLE_EQ(back.optim.beta2, 0.999);
  EXPECT_DOUBLE_EQ(back.optim.eps, 1e-8);
}

TEST(Config, DottedKeysAndListsAndBools) {
  Config c;
  apply_yaml(c, "optim.lr: 0.3\ndata:\n  source_weights: [1, 2.5]\n  resampled: yes\n", "x.yaml");
  EXPECT_DOUBLE_EQ(c.optim.lr, 0.3);
  EXPECT_EQ(c.data.source_weights, (std::vector<double>{1.0, 2.5}));
  EXPECT_TRUE(c.data.resampled);
  apply_override(c, "data.source_weights=[3]");
  EXPECT_EQ(c.data.source_weights, (std::vector<double>{3.0}));
  apply_override(c, "data.train_shards=/d/{00000..00009}.tar::pipe:cat /e/{0..3}.tar");
  EXPECT_EQ(c.data.train_shards, "/d/{00000..00009}.tar::pipe:cat /e/{0..3}.tar");
}

TEST(Config, UnknownKeyNamesFileLineKeyAndSuggestion) {
  Config c;
  const auto msg = error_of([&] { apply_yaml(c, "optim:\n  lr: 0.1\n  lrr: 0.2\n", "run.yaml"); });
  EXPECT_TRUE(has(msg, "run.yaml:3:")) << msg;
  EXPECT_TRUE(has(msg, "unknown key 'optim.lrr'")) << msg;
  EXPECT_TRUE(has(msg, "did you mean 'optim.lr'?")) << msg;
}

TEST(Config, KeyInTheWrongSectionSuggestsTheSectionThatHasIt) {
  Config c;
  auto msg = error_of([&] { apply_override(c, "train.lr=0.1"); });
  EXPECT_TRUE(has(msg, "unknown key 'train.lr'") && has(msg, "did you mean 'optim.lr'?")) << msg;
  msg = error_of([&] { apply_yaml(c, "train:\n  warmup_step: 10\n", "w.yaml"); });
  EXPECT_TRUE(has(msg, "w.yaml:2:") && has(msg, "did you mean 'optim.warmup_steps'?")) << msg;
  msg = error_of([&] { apply_override(c, "optim.kind=siglip"); });
  EXPECT_TRUE(has(msg, "did you mean 'loss.kind'?")) << msg;
}

TEST(Config, UnknownSectionSuggests) {
  Config c;
  const auto msg = error_of([&] { apply_yaml(c, "optimm:\n  lr: 0.1\n", "s.yaml"); });
  EXPECT_TRUE(has(msg, "s.yaml:1:")) << msg;
  EXPECT_TRUE(has(msg, "'optimm'")) << msg;
}

TEST(Config, UnknownKeyFarFromAnyListsSectionKeys) {
  Config c;
  const auto msg = error_of([&] { apply_yaml(c, "loss:\n  zzzzzzzzzzzz: 1\n", "l.yaml"); });
  EXPECT_TRUE(has(msg, "loss.zzzzzzzzzzzz")) << msg;
  EXPECT_TRUE(has(msg, "loss.kind")) << msg;
}

TEST(Config, WrongTypeNamesKeyValueAndExpectedType) {
  Config c;
  auto msg = error_of([&] { apply_yaml(c, "optim:\n  lr: fast\n", "t.yaml"); });
  EXPECT_TRUE(has(msg, "t.yaml:2:")) << msg;
  EXPECT_TRUE(has(msg, "'optim.lr'")) << msg;
  EXPECT_TRUE(has(msg, "'fast'")) << msg;
  EXPECT_TRUE(has(msg, "not a float")) << msg;

  msg = error_of([&] { apply_yaml(c, "train:\n  batch_size: 1.5\n", "t.yaml"); });
  EXPECT_TRUE(has(msg, "'train.batch_size'") && has(msg, "'1.5'") && has(msg, "not an int")) << msg;

  msg = error_of([&] { apply_yaml(c, "data:\n  resampled: maybe\n", "t.yaml"); });
  EXPECT_TRUE(has(msg, "'data.resampled'") && has(msg, "not a bool")) << msg;

  msg = error_of([&] { apply_yaml(c, "train:\n  batch_size: [1, 2]\n", "t.yaml"); });
  EXPECT_TRUE(has(msg, "'train.batch_size'") && has(msg, "not a int")) << msg;

  msg = error_of([&] { apply_yaml(c, "data:\n  source_weights: [1, x]\n", "t.yaml"); });
  EXPECT_TRUE(has(msg, "'data.source_weights'") && has(msg, "'x'")) << msg;

  msg = error_of([&] { apply_override(c, "optim.lr=abc"); });
  EXPECT_TRUE(has(msg, "--set") && has(msg, "'optim.lr'") && has(msg, "'abc'")) << msg;
}

TEST(Config, ChoicesAndMinimumsAreChecked) {
  Config c;
  auto msg = error_of([&] { apply_yaml(c, "loss:\n  kind: siglp\n", "c.yaml"); });
  EXPECT_TRUE(has(msg, "c.yaml:2:") && has(msg, "'loss.kind'") && has(msg, "clip, siglip") &&
              has(msg, "did you mean 'siglip'"))
      << msg;
  msg = error_of([&] { apply_override(c, "train.batch_size=0"); });
  EXPECT_TRUE(has(msg, "'train.batch_size'") && has(msg, "below the minimum 1")) << msg;
}

TEST(Config, MissingRequiredKeySaysSo) {
  clipper::test::TempDir d;
  const auto f = d.write("nomodel.yaml", "optim:\n  lr: 0.1\n");
  const auto msg = error_of([&] { load({f}); });
  EXPECT_TRUE(has(msg, "missing required key 'model.name'")) << msg;
  EXPECT_NO_THROW(load({f}, {}, /*check_required=*/false));
  EXPECT_NO_THROW(load({f}, {"model.name=tiny-vit"}));
}

TEST(Config, BadOverrideAndBadYaml) {
  Config c;
  auto msg = error_of([&] { apply_override(c, "optim.lr"); });
  EXPECT_TRUE(has(msg, "expected KEY=VALUE")) << msg;
  msg = error_of([&] { apply_override(c, "optim.lrate=1"); });
  EXPECT_TRUE(has(msg, "unknown key 'optim.lrate'") && has(msg, "did you mean 'optim.lr'")) << msg;
  msg = error_of([&] { apply_yaml(c, "optim:\n  lr: [1, 2\n", "broken.yaml"); });
  EXPECT_TRUE(has(msg, "broken.yaml:") && has(msg, "invalid YAML")) << msg;
  msg = error_of([&] { apply_yaml(c, "- a\n- b\n", "list.yaml"); });
  EXPECT_TRUE(has(msg, "list.yaml") && has(msg, "mapping")) << msg;
  msg = error_of([&] { apply_yaml(c, "optim: 3\n", "sec.yaml"); });
  EXPECT_TRUE(has(msg, "sec.yaml:1:") && has(msg, "'optim' is a section")) << msg;
  msg = error_of([&] { load({"/no/such/config.yaml"}); });
  EXPECT_TRUE(has(msg, "/no/such/config.yaml")) << msg;
}

// An exclusive upper bound (train.ema_decay < 1): the bound itself is refused, below it is not.
TEST(Config, ExclusiveMaximumRefusesTheBound) {
  Config c;
  auto msg = error_of([&] { apply_override(c, "train.ema_decay=1"); });
  EXPECT_TRUE(has(msg, "train.ema_decay': value '1' is not below 1 (expected a value < 1)")) << msg;
  msg = error_of([&] { apply_yaml(c, "train: {ema_decay: 1.5}\n", "ema.yaml"); });
  EXPECT_TRUE(has(msg, "ema.yaml:1:") && has(msg, "is not below 1")) << msg;
  apply_override(c, "train.ema_decay=0.9999");
  EXPECT_DOUBLE_EQ(c.train.ema_decay, 0.9999);
  msg = error_of([&] { apply_override(c, "train.ema_decay=-0.1"); });
  EXPECT_TRUE(has(msg, "below the minimum 0")) << msg;
}

TEST(Config, DumpReadsBackToTheSameConfig) {
  Config c;
  apply_yaml(c,
             "model: {name: ViT-B-32}\noptim: {lr: 0.000123}\n"
             "data: {train_shards: 'a/{0..3}.tar::b.tar', source_weights: [0.25, 4]}\n"
             "train: {run_name: 'x: y'}\n",
             "in.yaml");
  const std::string dumped = to_yaml(c);
  Config back;
  apply_yaml(back, dumped, "dumped.yaml");
  EXPECT_EQ(to_yaml(back), dumped);
  EXPECT_DOUBLE_EQ(back.optim.lr, 0.000123);
  EXPECT_EQ(back.data.train_shards, "a/{0..3}.tar::b.tar");
  EXPECT_EQ(back.train.run_name, "x: y");
  for (const auto& k : keys()) {
    const auto leaf = k.key.substr(k.key.find('.') + 1);
    EXPECT_TRUE(has(dumped, "  " + leaf + ": ")) << k.key;
  }
}

TEST(Config, DescribeKeysListsEveryKey) {
  const std::string d = describe_keys();
  for (const auto& k : keys()) EXPECT_TRUE(has(d, k.key + " (")) << k.key;
  EXPECT_TRUE(has(d, "model.name (string, required)"));
  EXPECT_TRUE(has(d, "optim.lr (float, default 0.0005)"));
}

// The dump goes into run folders and checkpoints: credentials in a pipe: command are masked.
TEST(Config, DumpMasksCredentials) {
  clipper::config::Config c;
  clipper::config::apply_override(
      c, "data.train_shards=pipe:curl -s https://alice:hunter2@host/s-{0..3}.tar?sig=abc");
  const std::string yaml = clipper::config::to_yaml(c);
  EXPECT_EQ(yaml.find("hunter2"), std::string::npos) << yaml;
  EXPECT_EQ(yaml.find("abc"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("https://***@host/s-{0..3}.tar?sig=***"), std::string::npos) << yaml;
}

// Found by tests/fuzz/fuzz_config.cpp: a value with a tab or a NUL was dumped unquoted and the
// dump did not read back.
TEST(Config, DumpOfControlCharactersReadsBack) {
  clipper::config::Config c;
  clipper::config::apply_yaml(c, std::string("model:\n  name: \"a\\tb\\x00c\"\n"), "t.yaml");
  clipper::config::Config back;
  clipper::config::apply_yaml(back, clipper::config::to_yaml(c), "dump.yaml");
  EXPECT_EQ(back.model.name, std::string("a\tb\0c", 5));
}

// lora.targets is a list of choices: each name parsed once into LoraTarget, each checked.
TEST(Config, LoraKeysParseTargetsIntoEnums) {
  Config c;
  EXPECT_EQ(c.lora.rank, 0);
  EXPECT_EQ(c.lora.targets, (std::vector<LoraTarget>{LoraTarget::attn, LoraTarget::mlp}));
  apply_yaml(c,
             "lora: {rank: 16, alpha: 32, dropout: 0.05, targets: [qkv, mlp_fc], towers: image,"
             " trainable: [logit_scale]}\n",
             "l.yaml");
  EXPECT_EQ(c.lora.rank, 16);
  EXPECT_DOUBLE_EQ(c.lora.alpha, 32.0);
  EXPECT_EQ(c.lora.targets, (std::vector<LoraTarget>{LoraTarget::qkv, LoraTarget::mlp_fc}));
  EXPECT_EQ(c.lora.towers, LoraTowers::image);
  EXPECT_EQ(c.lora.trainable, std::vector<std::string>{"logit_scale"});
  apply_override(c, "lora.targets=[all]");
  EXPECT_EQ(c.lora.targets, std::vector<LoraTarget>{LoraTarget::all});
  Config back;
  apply_yaml(back, to_yaml(c), "dumped.yaml");
  EXPECT_EQ(back.lora.targets, c.lora.targets);
  EXPECT_EQ(back.lora.towers, LoraTowers::image);
}

TEST(Config, LoraKeysRefuseBadValues) {
  Config c;
  auto msg = error_of([&] { apply_yaml(c, "lora:\n  targets: [qkv, mlp_fcc]\n", "l.yaml"); });
  EXPECT_TRUE(has(msg, "l.yaml:2:") && has(msg, "'lora.targets'") && has(msg, "'mlp_fcc'") &&
              has(msg, "did you mean 'mlp_fc'"))
      << msg;
  msg = error_of([&] { apply_override(c, "lora.rank=-1"); });
  EXPECT_TRUE(has(msg, "'lora.rank'") && has(msg, "below the minimum 0")) << msg;
  msg = error_of([&] { apply_override(c, "lora.dropout=1"); });
  EXPECT_TRUE(has(msg, "'lora.dropout'") && has(msg, "is not below 1")) << msg;
  msg = error_of([&] { apply_override(c, "lora.towers=vision"); });
  EXPECT_TRUE(has(msg, "'lora.towers'") && has(msg, "both, image, text")) << msg;
}
