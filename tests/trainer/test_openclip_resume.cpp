// Continuing an OpenCLIP run (label interop; tests/trainer/openclip_resume.py): open_clip_train's
// pieces train 3 steps on the CPU in fp32 from clipper's exported weights and save epoch_1.pt as
// main.py does, then resume it as main.py's --resume does and take step 4. clipper reads the same
// epoch_1.pt into a model of another random init (read_openclip_resume + load_openclip_resume,
// what checkpoint.resume_openclip runs), takes step 4 at the step the schedule continues at
// (epoch 1 x 3 steps per epoch) on the same batch, and must agree with OpenCLIP's step 4: the loss
// within 1e-5 relative, every parameter within 1e-6 (a moment left at zero or misplaced moves a
// parameter by about lr = 5e-4). Also the refusals: another model, another optimizer, amsgrad.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <map>
#include <memory>

#include "clipper/config/config.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/io/safetensors.hpp"
#include "clipper/model/model_spec.hpp"
#include "clipper/optim/schedule.hpp"
#include "clipper/train/step.hpp"
#include "clipper/trainer/openclip_resume.hpp"
#include "test_util.hpp"

using namespace clipper;

namespace {

constexpr std::int64_t kStepsPerEpoch = 3, kEpochs = 2, kBatch = 8;
const char* const kModel = "tiny-fmnist-vit";

// Float images (already normalized) and token ids: [kStepsPerEpoch + 1, kBatch, ...].
io::TensorList make_batches(const model::ModelSpec& spec) {
  at::manual_seed(2026);
  const auto n = kStepsPerEpoch + 1, s = spec.image_size, l = spec.context_length;
  auto images = at::randn({n, kBatch, 3, s, s});
  auto tokens = at::randint(1, 2000, {n, kBatch, l}, at::kLong);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t b = 0; b < kBatch; ++b) {
      const auto eot = 2 + (i * 3 + b * 5) % (l - 2);
      tokens[i][b][0] = spec.vocab_size - 2;
      tokens[i][b][eot] = spec.vocab_size - 1;
      tokens[i][b].narrow(0, eot + 1, l - eot - 1).zero_();
    }
  return {{"images", images}, {"tokens", tokens}};
}

train::StepConfig step_config() {
  train::StepConfig cfg;
  cfg.optim.lr = 5e-4;
  cfg.optim.warmup_steps = 2;
  cfg.optim.weight_decay = 0.2;
  cfg.optim.grad_clip_norm = 1.0;
  cfg.overlap_grad_reduce = false;
  return cfg;
}

// One OpenCLIP run for the whole suite: its files stay in a folder shared by the tests.
class OpenClipResume : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir;
    const auto spec = model::load_model_spec(kModel);
    io::export_openclip(model::create_model(spec, 42), spec, dir_->file("init"));
    io::save_safetensors(dir_->file("batches.safetensors"), make_batches(spec));
    const auto c = step_config();
    const std::string cmd =
        test::python() + " " + test::source_path("tests/trainer/openclip_resume.py") +
        " --clipper-dir " + dir_->file("init") + " --model " + kModel + " --batches " +
        dir_->file("batches.safetensors") + " --out-dir " + dir_->file("") + " --lr " +
        std::to_string(c.optim.lr) + " --warmup " + std::to_string(c.optim.warmup_steps) +
        " --wd " + std::to_string(c.optim.weight_decay) + " --grad-clip-norm 1.0 --epochs " +
        std::to_string(kEpochs);
    const auto r = test::run(cmd);
    ok_ = r.exit_code == 0;
    output_ = cmd + "\n" + r.output;
  }
  static void TearDownTestSuite() { delete dir_; }
  void SetUp() override { ASSERT_TRUE(ok_) << output_; }

  static std::string file(const std::string& name) { return dir_->file(name); }

  static test::TempDir* dir_;
  static bool ok_;
  static std::string output_;
};
test::TempDir* OpenClipResume::dir_ = nullptr;
bool OpenClipResume::ok_ = false;
std::string OpenClipResume::output_;

trainer::OpenClipResume read(const std::string& path, const model::ClipImpl& net) {
  const auto c = step_config();
  return trainer::read_openclip_resume(path, net, optim::adamw_options(c.optim, kModel),
                                       c.optim.weight_decay);
}

// Resumes `path` with dist.zero `zero` and takes step 4; compares with OpenCLIP's step 4. With
// `weights_only`, the moments are left out: the step must then differ (the tolerance sees them).
void expect_next_step_matches(const std::string& path, const std::string& next, int zero,
                              bool weights_only = false) {
  at::set_num_threads(1);
  const auto spec = model::load_model_spec(kModel);
  auto net = model::create_model(spec, 7);  // another init: the weights must come from the file
  auto cfg = step_config();
  cfg.zero = zero;
  train::TrainStep step(net, std::make_shared<dist::ProcessGroup>(), cfg, at::kCPU, {});
  const auto r = read(path, *net);
  EXPECT_EQ(r.epoch, 1);
  EXPECT_EQ(r.name, "openclip-resume-test");
  EXPECT_EQ(r.optimizer_steps, kStepsPerEpoch);
  if (weights_only)
    io::load_state_dict(*net, r.state_dict, path);
  else
    trainer::load_openclip_resume(r, step);

  std::map<std::string, at::Tensor> batches, theirs;
  for (auto& [k, v] : io::load_safetensors(next)) theirs[k] = v;
  for (auto& [k, v] :
       io::load_safetensors(path.substr(0, path.rfind('/')) + "/batches.safetensors"))
    batches[k] = v;
  const std::int64_t at_step = r.epoch * kStepsPerEpoch;
  const double lr = optim::learning_rate(cfg.optim, at_step, kEpochs * kStepsPerEpoch);
  const double loss = step.run({{batches["images"][at_step], batches["tokens"][at_step]}}, lr).loss;
  const double want = theirs.at("loss").item<double>();
  EXPECT_LE(std::abs(loss - want), 1e-5 * std::abs(want))
      << "clipper " << loss << ", open_clip " << want;
  double worst = 0;
  if (weights_only) {
    for (const auto& [name, t] : io::model_state_dict(*step.model()))
      worst = std::max(worst, (t.to(at::kDouble) - theirs.at(name).to(at::kDouble).view(t.sizes()))
                                  .abs()
                                  .max()
                                  .item<double>());
    EXPECT_GT(worst, 1e-4) << "without the moments the step should be far from OpenCLIP's";
    std::cout << "[openclip-resume] without the moments: worst parameter |diff| " << worst << "\n";
    return;
  }
  std::string where;
  for (const auto& [name, t] : io::model_state_dict(*step.model())) {
    ASSERT_TRUE(theirs.count(name)) << name;
    const double d = (t.to(at::kDouble) - theirs.at(name).to(at::kDouble).view(t.sizes()))
                         .abs()
                         .max()
                         .item<double>();
    EXPECT_LE(d, 1e-6) << name << " after the resumed step (dist.zero " << zero << ")";
    if (d > worst) worst = d, where = name;
  }
  std::cout << "[openclip-resume] " << path << " zero " << zero << ": step " << at_step + 1
            << " loss " << loss << " (open_clip " << want << "), worst parameter |diff| " << worst
            << " (" << where << ")\n";
}

}  // namespace

TEST_F(OpenClipResume, NextStepEqualsOpenClipsOwnNextStep) {
  expect_next_step_matches(file("epoch_1.pt"), file("next.safetensors"), 0);
  expect_next_step_matches(file("epoch_1.pt"), file("next.safetensors"), 0, true);
}

TEST_F(OpenClipResume, ModulePrefixedNamesAndZeroOneResumeTheSame) {
  expect_next_step_matches(file("epoch_1_module.pt"), file("next.safetensors"), 0);
  expect_next_step_matches(file("epoch_1.pt"), file("next.safetensors"), 1);
}

TEST_F(OpenClipResume, AnotherModelIsRefusedNamingTheFileAndParameter) {
  auto other = model::load_model_spec(kModel);
  other.embed_dim *= 2;
  auto wider = model::create_model(other, 1);
  auto e = test::error_of([&] { read(file("epoch_1.pt"), *wider); });
  EXPECT_NE(e.find(file("epoch_1.pt")), std::string::npos) << e;
  EXPECT_NE(e.find("proj"), std::string::npos) << e;
  EXPECT_NE(e.find("has shape"), std::string::npos) << e;

  auto resnet = model::create_model(model::load_model_spec("tiny-rn"), 1);
  e = test::error_of([&] { read(file("epoch_1.pt"), *resnet); });
  EXPECT_NE(e.find("which the model does not have"), std::string::npos) << e;

  auto siglip_spec = model::load_model_spec(kModel);
  siglip_spec.init_logit_bias = -10.0;
  auto siglip = model::create_model(siglip_spec, 1);
  e = test::error_of([&] { read(file("epoch_1.pt"), *siglip); });
  EXPECT_NE(e.find("has no 'logit_bias'"), std::string::npos) << e;

  auto locked = model::create_model(model::load_model_spec(kModel), 1);
  locked->lock_image_tower();
  e = test::error_of([&] { read(file("epoch_1.pt"), *locked); });
  EXPECT_NE(e.find("param group"), std::string::npos) << e;
  EXPECT_NE(e.find("locked towers"), std::string::npos) << e;
}

TEST_F(OpenClipResume, AnotherOptimizerAmsgradOrABareStateDictIsRefused) {
  auto net = model::create_model(model::load_model_spec(kModel), 1);
  auto e = test::error_of([&] { read(file("epoch_1_sgd.pt"), *net); });
  EXPECT_NE(e.find(file("epoch_1_sgd.pt")), std::string::npos) << e;
  EXPECT_NE(e.find("momentum_buffer"), std::string::npos) << e;
  EXPECT_NE(e.find("not torch.optim.AdamW's state"), std::string::npos) << e;
  e = test::error_of([&] { read(file("epoch_1_amsgrad.pt"), *net); });
  EXPECT_NE(e.find("amsgrad"), std::string::npos) << e;
  e = test::error_of([&] { read(file("bare.pt"), *net); });
  EXPECT_NE(e.find("has no 'epoch'"), std::string::npos) << e;
  EXPECT_NE(e.find("model.init_from"), std::string::npos) << e;
  e = test::error_of([&] { read(file("missing.pt"), *net); });
  EXPECT_NE(e.find(file("missing.pt")), std::string::npos) << e;
}
