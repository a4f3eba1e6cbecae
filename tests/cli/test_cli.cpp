// The `clipper` command line: config verbs, usage errors and exit codes.
#include <gtest/gtest.h>

#include <fstream>

#include "test_util.hpp"

using clipper::test::clipper_bin;
using clipper::test::run;
using clipper::test::source_path;

namespace {
bool has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}
}  // namespace

TEST(CliConfig, ShowAppliesSetOverride) {
  const auto r = run(clipper_bin() + " config show " + source_path("configs/demo.yaml") +
                     " --set optim.lr=0.1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "optim:\n")) << r.output;
  EXPECT_TRUE(has(r.output, "  lr: 0.1\n")) << r.output;
}

// AdamW's beta2 and eps follow OpenCLIP's defaults for the model family unless set.
TEST(CliConfig, ShowResolvesAdamWDefaultsPerModelFamily) {
  const auto rn = run(clipper_bin() + " config show --set model.name=RN50");
  ASSERT_EQ(rn.exit_code, 0) << rn.output;
  EXPECT_TRUE(has(rn.output, "  beta1: 0.9\n  beta2: 0.999\n  eps: 1e-08\n")) << rn.output;
  const auto vit = run(clipper_bin() + " config show --set model.name=ViT-B-32");
  ASSERT_EQ(vit.exit_code, 0) << vit.output;
  EXPECT_TRUE(has(vit.output, "  beta1: 0.9\n  beta2: 0.98\n  eps: 1e-06\n")) << vit.output;
  const auto set = run(clipper_bin() + " config show --set model.name=RN50 --set optim.beta2=0.95");
  ASSERT_EQ(set.exit_code, 0) << set.output;
  EXPECT_TRUE(has(set.output, "  beta2: 0.95\n  eps: 1e-08\n")) << set.output;
}

TEST(CliConfig, MisspelledKeyFailsWithSuggestion) {
  clipper::test::TempDir d;
  const auto f = d.write("typo.yaml", "model:\n  name: tiny-vit\ntrain:\n  bach_size: 4\n");
  const auto r = run(clipper_bin() + " config show " + f);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(has(r.output, "typo.yaml:4:")) << r.output;
  EXPECT_TRUE(has(r.output, "did you mean 'train.batch_size'?")) << r.output;
  const auto s = run(clipper_bin() + " config show " + f + " --set optim.lrr=1");
  EXPECT_EQ(s.exit_code, 1);
}

TEST(CliConfig, KeysListsHelp) {
  const auto r = run(clipper_bin() + " config keys");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "optim.lr (float, default 0.0005)")) << r.output;
}

TEST(Cli, UnknownVerbOrFlagIsUsageErrorExit2) {
  auto r = run(clipper_bin() + " frobnicate");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(has(r.output, "Usage") || has(r.output, "usage")) << r.output;
  r = run(clipper_bin() + " config show --no-such-flag");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = run(clipper_bin());
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

TEST(Cli, HelpAndVersion) {
  auto r = run(clipper_bin() + " --help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "config")) << r.output;
  r = run(clipper_bin() + " config --help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "show")) << r.output;
  r = run(clipper_bin() + " --version");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "clipper 0.1.0 (LibTorch 2.11.0")) << r.output;
  EXPECT_TRUE(has(r.output, "CUDA available: ")) << r.output;
}

// OpenCLIP's flags after `--` become a YAML that `config show` loads; what clipper cannot honour
// is printed as a warning and kept in the file as a comment; a flag OpenCLIP does not have fails.
TEST(CliConfig, FromOpenClipWritesALoadableYamlAndListsTheRest) {
  clipper::test::TempDir d;
  const auto out = d.file("run.yaml");
  const auto r = run(clipper_bin() + " config from-openclip --out " + out +
                     " --steps-per-epoch 10 -- --model ViT-B-32 --train-data "
                     "'/d/{0..9}.tar' --imagenet-val /i --save-frequency 2 --local-loss");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "not carried over: --imagenet-val /i: clipper's zero-shot"))
      << r.output;
  const auto show = run(clipper_bin() + " config show " + out);
  ASSERT_EQ(show.exit_code, 0) << show.output;
  EXPECT_TRUE(has(show.output, "  every_steps: 20\n")) << show.output;
  EXPECT_TRUE(has(show.output, "  local_loss: true\n  gather_with_grad: false\n")) << show.output;
  const auto bad = run(clipper_bin() + " config from-openclip -- --batch-sise 4");
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_TRUE(has(bad.output, "'--batch-sise' is not an OpenCLIP 3.3.0 training flag"))
      << bad.output;
}

// A model `clipper train` would refuse stops the translation with the reason and writes nothing
// (it used to write `name: coca_ViT-B-32` after saying "not carried over").
TEST(CliConfig, FromOpenClipStopsOnAModelClipperDoesNotHave) {
  clipper::test::TempDir d;
  const auto out = d.file("run.yaml");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"coca_roberta-ViT-B-32", "its text tower is a Hugging Face model (RoBERTa)"},
      {"nllb-clip-base-siglip", "its text tower is a Hugging Face model (NLLB)"},
      {"roberta-ViT-B-32", "clipper has no architecture file roberta-ViT-B-32.yaml"}};
  for (const auto& [model, why] : cases) {
    const auto r = run(clipper_bin() + " config from-openclip --out " + out + " -- --model " +
                       model + " --train-data '/d/{0..9}.tar'");
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(has(r.output, "error: --model " + model + ": " + why)) << r.output;
    EXPECT_TRUE(has(r.output, "nothing written")) << r.output;
    EXPECT_FALSE(std::filesystem::exists(out)) << model;
  }
}

// Zero-shot every epoch with ImageNet (not carried over) writes no eval.every_steps, which would
// evaluate nothing: it is on the "to check" list at the end, with the values needing a decision.
TEST(CliConfig, FromOpenClipEndsWithWhatToCheck) {
  clipper::test::TempDir d;
  const auto out = d.file("run.yaml");
  const auto r = run(clipper_bin() + " config from-openclip --out " + out +
                     " --world-size 8 -- --model ViT-B-32 --train-data '/d/{0..9}.tar'"
                     " --train-num-samples 10968539 --batch-size 320 --imagenet-val /i"
                     " --zeroshot-frequency 2 --epochs 10");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto show = run(clipper_bin() + " config show " + out);
  ASSERT_EQ(show.exit_code, 0) << show.output;
  const auto eval_at = show.output.find("\neval:\n");
  ASSERT_NE(eval_at, std::string::npos) << show.output;
  const auto eval = show.output.substr(eval_at, show.output.find("\nlog:\n") - eval_at);
  EXPECT_TRUE(has(eval, "  every_steps: 0\n")) << eval;
  // 10968539 / (320 x 8) = 4284 steps per epoch: a checkpoint every epoch, as OpenCLIP saves.
  EXPECT_TRUE(has(show.output, "  every_steps: 4284\n")) << show.output;
  const auto warn_at = r.output.find("to check: ");
  ASSERT_NE(warn_at, std::string::npos) << r.output;
  EXPECT_GT(warn_at, r.output.find("wrote ")) << "the list ends the output: " << r.output;
  EXPECT_TRUE(has(r.output, "to check: eval.every_steps: OpenCLIP evaluated zero-shot every 2"))
      << r.output;
  EXPECT_TRUE(has(r.output,
                  "to check: checkpoint.every_steps: converted from epochs with 4284 "
                  "steps per epoch (10968539 samples / (320 x 8 ranks x 1))"))
      << r.output;
  EXPECT_TRUE(has(r.output, "to check: checkpoint.keep_last: 10")) << r.output;
  std::ifstream in(out);
  const std::string yaml((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(has(yaml, "# To check before training:\n")) << yaml;
}
