// Step-for-step parity with OpenCLIP's training step (label interop). clipper exports its initial
// weights; open_clip loads them and runs open_clip_train's own train_one_epoch
// (tests/train/openclip_step_parity.py) over the same batches, on the CPU in fp32: warmup +
// cosine, weight decay, gradient clipping, AdamW with its defaults for the model family, and the
// logit-scale clamp (the scale starts just under ln 100 and the clamp holds it there). clipper
// runs the same steps through TrainStep and optim::learning_rate. Every step's loss agrees within
// 1e-5 (relative), every final parameter within 1e-5, BatchNorm statistics within 1e-5 relative.
//
// On purpose clipper differs under accumulation: OpenCLIP adds logit_scale's gradient once per
// micro-batch (each one's loss is the whole accumulated batch's), clipper once per step, the
// gradient of that loss. So the accumulation case locks logit_scale on both sides, where the two
// agree; the steps without accumulation cover a trained logit_scale.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <map>

#include "clipper/config/config.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/io/safetensors.hpp"
#include "clipper/model/model_spec.hpp"
#include "clipper/optim/schedule.hpp"
#include "clipper/train/step.hpp"
#include "test_util.hpp"

using namespace clipper;

namespace {

constexpr std::int64_t kSteps = 30, kBatch = 16;

struct Case {
  std::string model;
  double lr = 5e-4;
  std::int64_t accum = 1;
  bool freeze_logit_scale = false;
};

// Float images (already normalized) and token ids: [kSteps * accum, kBatch, ...].
io::TensorList make_batches(const model::ModelSpec& spec, std::int64_t n) {
  at::manual_seed(2026);
  const auto s = spec.image_size, l = spec.context_length;
  auto images = at::randn({n, kBatch, 3, s, s});
  auto tokens = at::randint(1, 2000, {n, kBatch, l}, at::kLong);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t b = 0; b < kBatch; ++b) {
      const auto eot = 2 + (i * 3 + b * 5) % (l - 2);  // pooled token, varying per row
      tokens[i][b][0] = spec.vocab_size - 2;
      tokens[i][b][eot] = spec.vocab_size - 1;
      tokens[i][b].narrow(0, eot + 1, l - eot - 1).zero_();
    }
  return {{"images", images}, {"tokens", tokens}};
}

void expect_step_parity(const Case& c) {
  at::set_num_threads(1);
  test::TempDir dir;
  const auto spec = model::load_model_spec(c.model);
  auto net = model::create_model(spec, 42);
  {
    at::NoGradGuard g;
    net->logit_scale.fill_(std::log(100.0) + 0.3);  // the first step's clamp brings it to ln 100
  }
  if (c.freeze_logit_scale) net->logit_scale.set_requires_grad(false);
  io::export_openclip(net, spec, dir.file("init"));
  const auto batches = make_batches(spec, kSteps * c.accum);
  io::save_safetensors(dir.file("batches.safetensors"), batches);

  train::StepConfig cfg;
  cfg.optim.lr = c.lr;
  cfg.optim.warmup_steps = 5;
  cfg.optim.weight_decay = 0.2;
  cfg.optim.grad_clip_norm = 1.0;
  cfg.overlap_grad_reduce = false;
  const train::StepOptions opts;
  auto pg = std::make_shared<dist::ProcessGroup>();
  train::TrainStep step(net, pg, cfg, at::kCPU, opts);
  std::vector<double> ours;
  for (std::int64_t s = 0; s < kSteps; ++s) {
    std::vector<train::MicroBatch> micro;
    for (std::int64_t j = 0; j < c.accum; ++j)
      micro.push_back({batches[0].second[s * c.accum + j], batches[1].second[s * c.accum + j]});
    ours.push_back(step.run(micro, optim::learning_rate(cfg.optim, s, kSteps)).loss);
  }

  const std::string cmd =
      test::python() + " " + test::source_path("tests/train/openclip_step_parity.py") +
      " --clipper-dir " + dir.file("init") + " --model " + c.model + " --batches " +
      dir.file("batches.safetensors") + " --out " + dir.file("theirs.safetensors") + " --lr " +
      std::to_string(cfg.optim.lr) + " --warmup " + std::to_string(cfg.optim.warmup_steps) +
      " --wd " + std::to_string(cfg.optim.weight_decay) + " --grad-clip-norm 1.0 --accum-freq " +
      std::to_string(c.accum) + (c.freeze_logit_scale ? " --freeze-logit-scale" : "");
  const auto r = test::run(cmd);
  ASSERT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;
  std::map<std::string, at::Tensor> theirs;
  for (auto& [k, v] : io::load_safetensors(dir.file("theirs.safetensors"))) theirs[k] = v;

  const auto& losses = theirs.at("losses");
  ASSERT_EQ(losses.numel(), kSteps);
  double worst_loss = 0;
  for (std::int64_t s = 0; s < kSteps; ++s) {
    const double want = losses[s].item<double>();
    worst_loss = std::max(worst_loss, std::abs(ours[s] - want) / std::abs(want));
    EXPECT_LE(std::abs(ours[s] - want), 1e-5 * std::abs(want))
        << c.model << " step " << s + 1 << ": clipper " << ours[s] << ", open_clip " << want;
  }
  // Parameters within 1e-5 or 5 % of one step's size (lr), whichever is larger: AdamW turns
  // gradients that differ at rounding level into steps of a fraction of lr, so where the bound
  // lands depends on the CPU's kernels (tiny-fmnist-vit at lr 5e-4: 4.3e-6 on the 2026-12-01
  // machine, 1.25e-5 in token_embedding.weight on the AVX-512 FP16 Xeon of 2026-12-07, with the
  // losses equal to 2e-6 on both). BatchNorm's running statistics (sums of batch means and
  // variances, which grow with the activations) within 1e-5 of their magnitude.
  const double param_tol = std::max(1e-5, 0.05 * c.lr);
  double worst = 0;
  std::string where;
  for (const auto& [name, t] : io::model_state_dict(*step.model())) {
    ASSERT_TRUE(theirs.count(name)) << name;
    const auto ref = theirs.at(name).to(at::kDouble);
    const double d = (t.to(at::kDouble) - ref).abs().max().item<double>();
    const bool stat = name.find(".running_") != std::string::npos;
    const double tol = stat ? 1e-5 * std::max(1.0, ref.abs().max().item<double>()) : param_tol;
    EXPECT_LE(d, tol) << c.model << " " << name << " after " << kSteps << " steps";
    if (d > worst) {
      worst = d;
      where = name;
    }
  }
  // The clamp took the scale from ln 100 + 0.3 to at most ln 100 (on both sides: it is compared
  // above with the other parameters).
  const double scale = step.model()->logit_scale.item<double>();
  EXPECT_LE(scale, std::log(100.0) + 1e-6);
  std::cout << "[parity] " << c.model << " accum " << c.accum << ": losses " << ours.front()
            << " .. " << ours.back() << " (worst relative diff " << worst_loss
            << "), worst parameter |diff| " << worst << " (" << where << "), logit_scale " << scale
            << "\n";
}

}  // namespace

TEST(StepParity, TinyViTMatchesOpenClipsTrainingSteps) {
  expect_step_parity({"tiny-fmnist-vit"});
}

// A smaller learning rate: with the ResNet family's eps of 1e-8, fp32 rounding grows fast in
// this tiny ResNet (attnpool's key bias, whose gradient is zero in exact arithmetic, gets
// rounding-noise gradients of ~4e-9 that AdamW turns into steps of a third of lr), so that
// open_clip against itself, from weights perturbed by 1e-7, drifts by 5e-3 in the loss at lr 5e-4
// but stays within 2e-6 at 3e-5 (2e-5 here).
TEST(StepParity, TinyModifiedResNetMatchesOpenClipsTrainingSteps) {
  expect_step_parity({"tiny-rn", 2e-5});
}

// Accumulation (2 micro-batches a step) with logit_scale locked: see the note at the top.
TEST(StepParity, TinyViTWithAccumulationMatchesOpenClipWhereBothAgree) {
  expect_step_parity({"tiny-fmnist-vit", 3e-4, 2, true});
}
