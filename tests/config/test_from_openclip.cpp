// `clipper config from-openclip`: OpenCLIP 3.3.0's training flags as a clipper configuration, on
// the training commands of OpenCLIP's README (tests/config/openclip_readme_commands.txt).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "clipper/config/from_openclip.hpp"
#include "clipper/config/loader.hpp"
#include "clipper/core/error.hpp"
#include "test_util.hpp"

namespace cc = clipper::config;

namespace {

// Shell words: '...' and "..." quoting, backslash-newline continuations already joined.
std::vector<std::string> shell_words(const std::string& line) {
  std::vector<std::string> out;
  std::string word;
  bool any = false;
  char quote = 0;
  for (char c : line) {
    if (quote) {
      if (c == quote)
        quote = 0;
      else
        word += c;
    } else if (c == '\'' || c == '"') {
      quote = c, any = true;
    } else if (c == ' ' || c == '\t') {
      if (any) out.push_back(word);
      word.clear(), any = false;
    } else {
      word += c, any = true;
    }
  }
  if (any) out.push_back(word);
  return out;
}

std::vector<std::vector<std::string>> readme_commands() {
  std::ifstream in(clipper::test::source_path("tests/config/openclip_readme_commands.txt"));
  std::vector<std::vector<std::string>> out;
  std::string command;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("#", 0) == 0) continue;
    if (line.find_first_not_of(" \t") == std::string::npos) {
      if (!command.empty()) out.push_back(shell_words(command));
      command.clear();
      continue;
    }
    if (!line.empty() && line.back() == '\\') line.pop_back();
    command += " " + line;
  }
  if (!command.empty()) out.push_back(shell_words(command));
  return out;
}

std::map<std::string, std::string> keys_of(const cc::OpenClipTranslation& t) {
  std::map<std::string, std::string> m;
  for (const auto& [k, v] : t.keys) m[k] = cc::value_to_string(v);
  return m;
}

bool listed(const std::vector<std::string>& lines, const std::string& start) {
  for (const auto& l : lines)
    if (l.rfind(start, 0) == 0) return true;
  return false;
}

// OpenCLIP 3.3.0's 90 training flags, each with a value where it takes one.
const std::vector<std::string> kEveryOpenClipFlag = {"--train-data=/d/{0..9}.tar",
                                                     "--train-data-upsampling-factors=1",
                                                     "--val-data=/v/0.tar",
                                                     "--train-num-samples=1000",
                                                     "--val-num-samples=10",
                                                     "--dataset-type=webdataset",
                                                     "--dataset-resampled",
                                                     "--csv-separator=,",
                                                     "--csv-img-key=a",
                                                     "--csv-caption-key=b",
                                                     "--imagenet-val=/i",
                                                     "--imagenet-v2=/i2",
                                                     "--cache-dir=/c",
                                                     "--logs=/l",
                                                     "--log-local",
                                                     "--name=n",
                                                     "--workers=2",
                                                     "--batch-size=8",
                                                     "--epochs=3",
                                                     "--epochs-cooldown=1",
                                                     "--lr=1e-4",
                                                     "--beta1=0.8",
                                                     "--beta2=0.9",
                                                     "--eps=1e-7",
                                                     "--wd=0.05",
                                                     "--momentum=0.9",
                                                     "--warmup=5",
                                                     "--opt=adamw",
                                                     "--use-bn-sync",
                                                     "--skip-scheduler",
                                                     "--lr-scheduler=cosine",
                                                     "--lr-cooldown-end=0",
                                                     "--lr-cooldown-power=1",
                                                     "--save-frequency=1",
                                                     "--save-most-recent",
                                                     "--zeroshot-frequency=1",
                                                     "--val-frequency=1",
                                                     "--resume=latest",
                                                     "--precision=fp32",
                                                     "--model=RN50",
                                                     "--pretrained=/w.pt",
                                                     "--pretrained-image",
                                                     "--lock-image",
                                                     "--lock-image-unlocked-groups=1",
                                                     "--lock-image-freeze-bn-stats",
                                                     "--image-mean",
                                                     "0.5",
                                                     "0.5",
                                                     "0.5",
                                                     "--image-std",
                                                     "0.5",
                                                     "0.5",
                                                     "0.5",
                                                     "--image-interpolation=bicubic",
                                                     "--image-resize-mode=squash",
                                                     "--aug-cfg",
                                                     "scale=(0.9,1.0)",
                                                     "--grad-checkpointing",
                                                     "--local-loss",
                                                     "--gather-with-grad",
                                                     "--force-context-length=32",
                                                     "--force-image-size",
                                                     "64",
                                                     "--force-quick-gelu",
                                                     "--force-patch-dropout=0.5",
                                                     "--force-custom-text",
                                                     "--torchscript",
                                                     "--torchcompile",
                                                     "--trace",
                                                     "--accum-freq=2",
                                                     "--device=cpu",
                                                     "--dist-url=tcp://h:1234",
                                                     "--dist-backend=gloo",
                                                     "--report-to=tensorboard",
                                                     "--wandb-notes=x",
                                                     "--wandb-project-name=p",
                                                     "--debug",
                                                     "--copy-codebase",
                                                     "--horovod",
                                                     "--ddp-static-graph",
                                                     "--no-set-device-rank",
                                                     "--seed=3",
                                                     "--grad-clip-norm=1.0",
                                                     "--lock-text",
                                                     "--lock-text-unlocked-layers=1",
                                                     "--lock-text-freeze-layer-norm",
                                                     "--log-every-n-steps=5",
                                                     "--coca-caption-loss-weight=1",
                                                     "--coca-contrastive-loss-weight=1",
                                                     "--remote-sync=s3://b",
                                                     "--remote-sync-frequency=60",
                                                     "--remote-sync-protocol=s3",
                                                     "--delete-previous-checkpoint",
                                                     "--distill-model=ViT-L-14",
                                                     "--distill-pretrained=openai",
                                                     "--use-bnb-linear=x",
                                                     "--siglip",
                                                     "--loss-dist-impl=gather"};

}  // namespace

namespace {

// The i-th README command, translated; its YAML loads as a clipper configuration.
cc::OpenClipTranslation readme_translation(std::size_t i) {
  const auto commands = readme_commands();
  EXPECT_EQ(commands.size(), 9u);
  auto t = cc::from_openclip(commands.at(i));
  cc::Config cfg;
  cc::apply_yaml(cfg, t.yaml(), "translation of README command " + std::to_string(i));
  return t;
}

}  // namespace

TEST(FromOpenClip, ReadmeCommandsAllLoad) {
  for (std::size_t i = 0; i < readme_commands().size(); ++i) readme_translation(i);
}

// Sample single-process: CSV and ImageNet are listed, the rest carried with OpenCLIP's defaults.
TEST(FromOpenClip, ReadmeSingleProcessCsv) {
  const auto t = readme_translation(0);
  auto k = keys_of(t);
  EXPECT_EQ(k["model.name"], "RN50");
  EXPECT_EQ(k["optim.lr"], "0.001");
  EXPECT_EQ(k["optim.weight_decay"], "0.1");
  EXPECT_EQ(k["optim.warmup_steps"], "10000");
  EXPECT_EQ(k["train.batch_size"], "128");
  EXPECT_EQ(k["train.epochs"], "30");
  EXPECT_EQ(k["log.tensorboard"], "true");
  EXPECT_EQ(k["loss.local_loss"], "false");
  EXPECT_EQ(k["loss.gather_with_grad"], "false");
  EXPECT_TRUE(listed(t.not_honoured,
                     "--train-data /path/to/train_data.csv: clipper reads "
                     "webdataset tar shards"));
  EXPECT_TRUE(listed(t.not_honoured, "--imagenet-val /path/to/imagenet/root/val/"));
  EXPECT_TRUE(listed(t.not_honoured, "--save-frequency 1: OpenCLIP counts it in epochs"));
  EXPECT_TRUE(listed(t.not_honoured, "--csv-img-key filepath"));
  EXPECT_EQ(k.count("data.train_shards"), 0u);
}

// Single-node webdataset: OpenCLIP's defaults for what is not given.
TEST(FromOpenClip, ReadmeSingleNodeWebdataset) {
  auto k = keys_of(readme_translation(1));
  EXPECT_EQ(k["data.train_shards"], "\"/data/cc12m/cc12m-train-{0000..2175}.tar\"");
  EXPECT_EQ(k["data.train_num_samples"], "10968539");
  EXPECT_EQ(k["train.precision"], "auto");
  EXPECT_EQ(k["model.name"], "RN50");
  EXPECT_EQ(k["train.epochs"], "32");
  EXPECT_EQ(k["optim.lr"], "0.0005");
  EXPECT_EQ(k["log.tensorboard"], "false");
}

// SLURM: the local loss with gathered gradients.
TEST(FromOpenClip, ReadmeSlurmLocalLoss) {
  auto k = keys_of(readme_translation(2));
  EXPECT_EQ(k["model.name"], "ViT-B-32");
  EXPECT_EQ(k["loss.local_loss"], "true");
  EXPECT_EQ(k["loss.gather_with_grad"], "true");
  EXPECT_EQ(k["train.run_name"], "ViT-B-32-Vanilla");
  EXPECT_EQ(k["train.seed"], "0");
  EXPECT_EQ(k["optim.warmup_steps"], "2000");
  EXPECT_EQ(k["data.workers"], "8");
}

// Resuming an OpenCLIP epoch_K.pt: continued from it.
TEST(FromOpenClip, ReadmeResumeEpochCheckpoint) {
  const auto t = readme_translation(3);
  EXPECT_FALSE(listed(t.not_honoured, "--resume /path/to/checkpoints/epoch_K.pt"));
  EXPECT_EQ(keys_of(t)["checkpoint.resume_openclip"], "/path/to/checkpoints/epoch_K.pt");
}

// Two sources with upsampling factors.
TEST(FromOpenClip, ReadmeTwoSourcesUpsampled) {
  auto k = keys_of(readme_translation(4));
  EXPECT_EQ(k["data.source_weights"], "[1.0, 2.0]");
  EXPECT_EQ(k["data.resampled"], "true");
  EXPECT_NE(k["data.train_shards"].find(".tar::/data/LAION-400M/"), std::string::npos);
}

// Text tower locked; pipe: sources carried as they are.
TEST(FromOpenClip, ReadmeLockedTextPipeSources) {
  const auto t = readme_translation(5);
  auto k = keys_of(t);
  EXPECT_EQ(k["model.lock_text"], "true");
  EXPECT_EQ(k["model.lock_text_unlocked_layers"], "10");
  EXPECT_EQ(k["eval.retrieval_shards"], "\"pipe:aws s3 cp s3://s-mas/cc3m/{00330..00331}.tar -\"");
  EXPECT_TRUE(listed(t.not_honoured, "--val-num-samples 10000"));
}

// CoCa: CSV and wandb listed; the CoCa loss weights carried over (issue 29).
TEST(FromOpenClip, ReadmeCocaListsWhatClipperLacks) {
  const auto t = readme_translation(6);
  EXPECT_TRUE(listed(t.not_honoured, "--report-to wandb"));
  EXPECT_FALSE(listed(t.not_honoured, "--coca-caption-loss-weight 1"));
  EXPECT_EQ(keys_of(t)["loss.coca_caption_weight"], "1.0");
  EXPECT_EQ(keys_of(t)["loss.coca_clip_weight"], "0.0");
  EXPECT_EQ(keys_of(t)["train.log_every"], "100");
}

// Remote sync to s3, resume latest, one checkpoint kept.
TEST(FromOpenClip, ReadmeRemoteSyncResumeLatest) {
  auto k = keys_of(readme_translation(7));
  EXPECT_EQ(k["checkpoint.sync_command"],
            "\"aws s3 sync {dir} 's3://bucket/clip/run1/checkpoints/'{name}\"");
  EXPECT_EQ(k["checkpoint.keep_last"], "1");
  EXPECT_EQ(k["checkpoint.resume"], "latest");
  EXPECT_EQ(k["train.output_dir"], "/scratch");
}

// Accumulation, checkpointing, patch dropout forced off: everything honoured.
// Issue 25: --name and --remote-sync were pasted raw into the shell command ('my run; touch PWNED'
// ran `touch PWNED`; a space or '(' made every sync fail). The command is run here as rank 0 runs
// it ({dir} and {name} replaced quoted, as expand_sync_command does), with printf in place of aws:
// it gets the folder and the destination as two whole words, and nothing else runs.
TEST(FromOpenClip, RemoteSyncQuotesHostileNames) {
  clipper::test::TempDir d;
  const std::string step = "step_00000002";
  for (const std::string name :
       {"my run; touch PWNED", "run (2) with spaces", "it's $(touch PWNED)", "`touch PWNED`",
        "{dir}; touch PWNED {name}"}) {
    auto t = cc::from_openclip(
        {"--train-data", "/d/{0..9}.tar", "--name", name, "--remote-sync", "s3://b/logs dir"});
    cc::Config cfg;
    cc::apply_yaml(cfg, t.yaml(), "translation");
    std::string cmd = cfg.checkpoint.sync_command;
    ASSERT_EQ(cmd.rfind("aws s3 sync {dir} ", 0), 0u) << cmd;
    cmd = "printf '%s\\n' " + cmd.substr(std::string("aws s3 sync ").size());
    for (const std::string key : {"{dir}", "{name}"})
      for (auto at = cmd.find(key); at != std::string::npos; at = cmd.find(key, at))
        cmd.replace(at, key.size(), key == "{dir}" ? "'/r/" + step + "'" : "'" + step + "'");
    const auto r = clipper::test::run("cd " + d.path().string() + " && " + cmd);
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_EQ(r.output, "/r/" + step + "\ns3://b/logs dir/" + name + "/checkpoints/" + step + "\n")
        << cmd;
    EXPECT_FALSE(std::filesystem::exists(d.path() / "PWNED")) << cmd;
  }
}

TEST(FromOpenClip, ReadmeAccumulationCheckpointingPatchDropout) {
  const auto t = readme_translation(8);
  auto k = keys_of(t);
  EXPECT_EQ(k["train.accum_freq"], "4");
  EXPECT_EQ(k["model.grad_checkpointing"], "true");
  EXPECT_EQ(k["model.force_patch_dropout"], "0.0");
  EXPECT_TRUE(t.not_honoured.empty()) << t.yaml();
}

// OpenCLIP counts saves, evaluations and the cooldown in epochs; with the steps per epoch they
// become clipper's step counts and nothing is left over.
TEST(FromOpenClip, EpochCountsBecomeStepsWithStepsPerEpoch) {
  const std::vector<std::string> flags = {"--model",
                                          "ViT-B-32",
                                          "--train-data",
                                          "/d/{0..9}.tar",
                                          "--val-data",
                                          "/v/0.tar",
                                          "--save-frequency",
                                          "2",
                                          "--val-frequency",
                                          "1",
                                          "--lr-scheduler",
                                          "const-cooldown",
                                          "--epochs-cooldown",
                                          "3",
                                          "--lr-cooldown-end",
                                          "1e-6",
                                          "--lr-cooldown-power",
                                          "1.5",
                                          "--precision",
                                          "amp_bf16",
                                          "--siglip",
                                          "--loss-dist-impl",
                                          "bidir"};
  const auto t = cc::from_openclip(flags, {100});
  auto k = keys_of(t);
  EXPECT_EQ(k["checkpoint.every_steps"], "200");
  EXPECT_EQ(k["eval.every_steps"], "100");
  EXPECT_EQ(k["optim.schedule"], "const-cooldown");
  EXPECT_EQ(k["optim.cooldown_steps"], "300");
  EXPECT_EQ(k["optim.cooldown_end_lr"], "1e-06");
  EXPECT_EQ(k["optim.cooldown_power"], "1.5");
  EXPECT_EQ(k["train.precision"], "bf16");
  EXPECT_EQ(k["loss.kind"], "siglip");
  EXPECT_EQ(k["loss.siglip_exchange"], "neighbour");
  EXPECT_TRUE(t.not_honoured.empty()) << t.yaml();
  // Without it they are listed, never dropped.
  const auto u = cc::from_openclip(flags);
  EXPECT_TRUE(listed(u.not_honoured, "--save-frequency 2: OpenCLIP counts it in epochs"));
  EXPECT_TRUE(listed(u.not_honoured, "--epochs-cooldown 3"));
  EXPECT_TRUE(listed(u.not_honoured, "--val-frequency 1"));
}

// Every one of OpenCLIP's 90 flags has a rule: given all at once, each is carried, noted or
// listed with its own reason (none falls through to the catch-all).
TEST(FromOpenClip, EveryOpenClipFlagHasARule) {
  const auto t = cc::from_openclip(kEveryOpenClipFlag);
  for (const auto& n : t.not_honoured)
    EXPECT_EQ(n.find("no clipper equivalent"), std::string::npos) << n;
  const auto k = keys_of(t);
  EXPECT_EQ(k.at("dist.master_addr"), "h");
  EXPECT_EQ(k.at("dist.master_port"), "1234");
  EXPECT_EQ(k.at("model.init_from"), "/w.pt");
  EXPECT_EQ(k.at("loss.distill_model"), "ViT-L-14");
  EXPECT_EQ(k.count("loss.distill_from"), 0u);  // "openai" is a tag: listed, not downloaded
  EXPECT_EQ(k.at("optim.schedule"), "const");   // --skip-scheduler
  EXPECT_EQ(k.at("optim.warmup_steps"), "0");
  EXPECT_EQ(k.at("model.force_image_size"), "64");
  EXPECT_EQ(k.at("log.level"), "debug");
  cc::Config cfg;
  cc::apply_yaml(cfg, t.yaml(), "translation");
}

// What OpenCLIP's own argparse rejects is an error naming the flag, as argparse's would be.
TEST(FromOpenClip, RejectsWhatOpenClipRejects) {
  const auto error = [](const std::vector<std::string>& flags) {
    try {
      cc::from_openclip(flags);
    } catch (const clipper::core::InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error({"--train_data_upsampling_factors=1::2"})
                .find("'--train_data_upsampling_factors' is not an OpenCLIP 3.3.0 training flag"),
            std::string::npos);
  EXPECT_NE(error({"--save-most-recent", "True"}).find("unexpected argument 'True'"),
            std::string::npos);
  EXPECT_NE(error({"--batch-size", "abc"}).find("--batch-size 'abc': expected an integer"),
            std::string::npos);
  EXPECT_NE(error({"--lr"}).find("--lr expects a value"), std::string::npos);
  EXPECT_NE(error({"--lr-cooldown", "1"}).find("ambiguous"), std::string::npos);
  // argparse's unique prefixes are accepted.
  EXPECT_EQ(keys_of(cc::from_openclip({"--batch", "32"}))["train.batch_size"], "32");
}

// What it writes passes `clipper train`'s checks or it stops: a model clipper has no architecture
// for is an error with the reason; eval.every_steps is written only with data to evaluate.
TEST(FromOpenClip, WritesOnlyWhatTrainAccepts) {
  cc::FromOpenClipOptions o;
  o.steps_per_epoch = 100;
  o.known_model = [](const std::string& name) { return name == "ViT-B-32"; };
  const auto error = [&](const std::string& model) {
    try {
      cc::from_openclip({"--model", model, "--train-data", "/d/{0..9}.tar"}, o);
    } catch (const clipper::core::InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error("coca_roberta-ViT-B-32")
                .find("--model coca_roberta-ViT-B-32: its text tower is a Hugging Face model "
                      "(RoBERTa)"),
            std::string::npos);
  EXPECT_NE(error("nllb-clip-base-siglip").find("its text tower is a Hugging Face model"),
            std::string::npos);
  EXPECT_NE(error("nllb-clip-base-siglip").find("nothing written"), std::string::npos);
  // Validation on a CSV file (not carried over) and zero-shot on ImageNet (never carried over).
  const auto t = cc::from_openclip(
      {"--model", "ViT-B-32", "--train-data", "/d/{0..9}.tar", "--val-data", "/v.csv",
       "--val-frequency", "1", "--imagenet-val", "/i", "--zeroshot-frequency", "1"},
      o);
  EXPECT_EQ(keys_of(t).count("eval.every_steps"), 0u) << t.yaml();
  EXPECT_TRUE(listed(t.to_check, "eval.every_steps: OpenCLIP evaluated zero-shot every 1"));
}

// The steps per epoch follow from the world size the OpenCLIP command does not contain.
TEST(FromOpenClip, WorldSizeGivesTheStepsPerEpoch) {
  cc::FromOpenClipOptions o;
  o.world_size = 4;
  const auto t =
      cc::from_openclip({"--train-data", "/d/{0..9}.tar", "--train-num-samples", "10000",
                         "--batch-size", "64", "--accum-freq", "2", "--save-frequency", "3"},
                        o);
  EXPECT_EQ(keys_of(t)["checkpoint.every_steps"], "57");  // 3 x floor(10000 / (64 x 4 x 2))
  EXPECT_TRUE(listed(t.to_check,
                     "checkpoint.every_steps: converted from epochs with 19 steps "
                     "per epoch (10000 samples / (64 x 4 ranks x 2))"));
  EXPECT_TRUE(listed(t.to_check, "checkpoint.keep_last: 32"));
  // CSV data: the required data.train_shards is left unset and says so.
  const auto csv = cc::from_openclip({"--train-data", "/d/train.csv"});
  EXPECT_TRUE(listed(csv.to_check, "data.train_shards: not set"));
}
