// bf16 autocast with gradient checkpointing: the recompute in backward must leave no bf16 weight
// copies behind, or the next step's forward reads last step's weights. With it done right, the
// checkpointed run is the plain run, bit for bit, over several steps, with and without
// accumulation (whose first pass computes features without grad).
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>

#include "clipper/config/config.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/model/model_spec.hpp"
#include "clipper/train/step.hpp"
#include "random_batch.hpp"

using namespace clipper;

namespace {

// Runs `steps` bf16 steps of `accum` micro-batches with checkpointing on and off; every loss and
// every parameter must be equal.
void expect_checkpointing_changes_nothing(int accum, int steps) {
  const auto spec = model::load_model_spec("tiny-fmnist-vit");
  const auto pg = std::make_shared<dist::ProcessGroup>();
  train::StepConfig cfg;
  cfg.overlap_grad_reduce = false;
  train::StepOptions bf;
  bf.bf16 = true;
  auto plain_model = model::create_model(spec, 3), ckpt_model = model::create_model(spec, 3);
  ckpt_model->set_grad_checkpointing(true);
  train::TrainStep plain(plain_model, pg, cfg, at::kCPU, bf);
  train::TrainStep ckpt(ckpt_model, pg, cfg, at::kCPU, bf);
  // One run after the other: the cast cache is per thread, and a step of the other run in between
  // would clear it. A large learning rate moves the weights far enough to see a stale copy.
  auto losses = [&](train::TrainStep& step) {
    std::vector<double> out;
    for (int s = 0; s < steps; ++s) {
      std::vector<train::MicroBatch> micro;
      for (int j = 0; j < accum; ++j) micro.push_back(test::random_batch(spec, 8, 100 * s + j));
      out.push_back(step.run(micro, 0.01).loss);
    }
    return out;
  };
  const auto a = losses(plain), b = losses(ckpt);
  for (int s = 0; s < steps; ++s)
    EXPECT_EQ(a[s], b[s]) << "step " << s + 1 << " (accum " << accum << ")";
  EXPECT_FALSE(at::autocast::is_autocast_enabled(at::kCPU));
  const auto p1 = plain.model()->state_dict(), p2 = ckpt.model()->state_dict();
  for (std::size_t i = 0; i < p1.size(); ++i)
    EXPECT_TRUE(at::equal(p1[i].second, p2[i].second))
        << p1[i].first << " differs after " << steps << " steps (accum " << accum
        << "): max |diff| " << (p1[i].second - p2[i].second).abs().max().item<double>();
}

}  // namespace

TEST(TrainStepBf16, GradCheckpointingEqualsPlainOverSteps) {
  expect_checkpointing_changes_nothing(/*accum=*/1, /*steps=*/4);
}

TEST(TrainStepBf16, GradCheckpointingEqualsPlainWithAccumulation) {
  expect_checkpointing_changes_nothing(/*accum=*/2, /*steps=*/3);
}
