// GPU checks (label cuda): bf16 autocast, SDPA kernel choice, fused AdamW, checkpoint round trip,
// training steps, a one-rank NCCL group and steps without host synchronization. Built and run by
// scripts/gpu/check.sh on a CUDA machine
// (-DCLIPPER_CUDA_TESTS=ON); the CPU suite does not include them.
#include <c10/cuda/CUDAFunctions.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <ATen/ATen.h>

#include <cmath>

#include "clipper/config/config.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/dist/world.hpp"
#include "clipper/io/safetensors.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/model/model_spec.hpp"
#include "clipper/optim/adamw.hpp"
#include "clipper/train/precision.hpp"
#include "clipper/train/step.hpp"
#include "test_util.hpp"

using namespace clipper;

namespace {
const at::Device kCuda(at::kCUDA, 0);
}

TEST(Cuda, DeviceIsThere) {
  ASSERT_TRUE(torch::cuda::is_available());
}

TEST(Cuda, AutocastGuardCastsToBf16AndRestores) {
  auto a = at::randn({64, 64}, at::TensorOptions().device(kCuda));
  {
    train::AutocastGuard g(true);
    EXPECT_EQ(a.mm(a).scalar_type(), at::kBFloat16);
    {
      train::AutocastGuard nested(true);
      EXPECT_EQ(a.mm(a).scalar_type(), at::kBFloat16);
    }
    EXPECT_EQ(a.mm(a).scalar_type(), at::kBFloat16);
  }
  EXPECT_EQ(a.mm(a).scalar_type(), at::kFloat);
}

TEST(Cuda, SdpaPicksAFusedKernelInBf16) {
  const auto o = at::TensorOptions().device(kCuda).dtype(at::kBFloat16);
  auto q = at::randn({4, 12, 197, 64}, o), k = at::randn({4, 12, 197, 64}, o),
       v = at::randn({4, 12, 197, 64}, o);
  const auto backend = at::_fused_sdp_choice(q, k, v, {}, 0.0, false, std::nullopt, false);
  EXPECT_NE(backend, 0) << "SDPA fell back to the math kernel";  // 0 = math
  auto out = at::scaled_dot_product_attention(q, k, v);
  auto ref = at::softmax(q.to(at::kFloat).matmul(k.to(at::kFloat).transpose(-2, -1)) / 8.0, -1)
                 .matmul(v.to(at::kFloat));
  EXPECT_LT((out.to(at::kFloat) - ref).abs().max().item<double>(), 3e-2);
}

TEST(Cuda, FusedAdamWMatchesTheCpuPath) {
  at::manual_seed(0);
  auto cpu = at::randn({256, 128}).requires_grad_(true);
  auto gpu = cpu.detach().to(kCuda).requires_grad_(true);
  optim::AdamW oc({optim::ParamGroup{{"w"}, {cpu}, 0.1}}, {});
  optim::AdamW og({optim::ParamGroup{{"w"}, {gpu}, 0.1}}, {});
  for (int t = 0; t < 5; ++t) {
    auto g = at::randn({256, 128});
    cpu.mutable_grad() = g.clone();
    gpu.mutable_grad() = g.to(kCuda);
    oc.step(1e-2);
    og.step(1e-2);
  }
  EXPECT_LT((gpu.detach().cpu() - cpu.detach()).abs().max().item<double>(), 1e-5);
}

TEST(Cuda, CheckpointRoundTripFromGpuTensors) {
  test::TempDir d;
  const auto o = at::TensorOptions().device(kCuda);
  io::TensorList t = {{"a", at::randn({3, 5}, o)},
                      {"b", at::randn({7}, o).to(at::kBFloat16)},
                      {"c", at::arange(10, o.dtype(at::kLong))}};
  io::save_safetensors(d.file("x.safetensors"), t);
  const auto back = io::load_safetensors(d.file("x.safetensors"));
  ASSERT_EQ(back.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(back[i].first, t[i].first);
    EXPECT_TRUE(at::equal(back[i].second, t[i].second.cpu())) << t[i].first;
  }
}

TEST(Cuda, TrainStepInBf16OnTinyVit) {
  train::StepConfig cfg;
  cfg.optim.lr = 1e-3;
  cfg.optim.grad_clip_norm = 1.0;
  auto pg = std::make_shared<dist::ProcessGroup>();
  auto spec = model::load_model_spec("tiny-vit");
  train::TrainStep step(model::create_model(spec, 0), pg, cfg, kCuda,
                        train::StepOptions{true, true});
  auto images = at::randint(0, 256, {32, spec.image_size, spec.image_size, 3}, at::kByte);
  auto tokens = at::randint(1, 1000, {32, spec.context_length}, at::kLong);
  tokens.select(1, 5).fill_(spec.vocab_size - 1);
  double first = 0, last = 0;
  for (int i = 0; i < 20; ++i) {
    const auto r = step.run({{images, tokens}}, 1e-3);
    ASSERT_FALSE(r.skipped) << "step " << i;
    if (i == 0) first = r.loss;
    last = r.loss;
  }
  EXPECT_LT(last, first);  // the same batch again and again: the loss must fall
}

// A one-rank NCCL group (dist.backend nccl, one process): the collectives the training step uses
// on CUDA tensors, then training steps with it as the step's group.
TEST(Cuda, SingleRankNcclGroup) {
  config::Config cfg;
  cfg.dist.backend = config::Backend::nccl;
  cfg.optim.lr = 1e-3;
  const auto pg = dist::ProcessGroup::create(dist::World{}, cfg.dist, /*use_cuda=*/true);
  ASSERT_EQ(pg->backend_name(), "nccl");
  ASSERT_TRUE(pg->device().is_cuda());
  const auto o = at::TensorOptions().device(pg->device());
  auto t = at::arange(6, o.dtype(at::kFloat));
  pg->all_reduce(t);
  EXPECT_TRUE(at::equal(t.cpu(), at::arange(6, at::kFloat)));
  EXPECT_TRUE(at::equal(pg->all_gather(t).cpu(), t.cpu()));
  pg->broadcast(t, 0);
  EXPECT_EQ(pg->all_reduce_int(4, dist::ReduceOp::sum), 4);
  pg->barrier();
  auto spec = model::load_model_spec("tiny-vit");
  const auto step_cfg = train::StepConfig::from(cfg);
  train::TrainStep step(model::create_model(spec, 0), pg, step_cfg, pg->device(),
                        train::StepOptions{true, false});
  auto images = at::randint(0, 256, {16, spec.image_size, spec.image_size, 3}, o.dtype(at::kByte));
  auto tokens = at::randint(1, 1000, {16, spec.context_length}, o.dtype(at::kLong));
  tokens.select(1, 5).fill_(spec.vocab_size - 1);
  for (int i = 0; i < 3; ++i) {
    const auto r = step.run({{images, tokens}}, 1e-3);
    ASSERT_TRUE(r.read);
    ASSERT_FALSE(r.skipped) << "step " << i;
    ASSERT_TRUE(std::isfinite(r.loss)) << "step " << i;
  }
}

// With read-back every 8 steps, the steps in between never synchronize the host with the device:
// CUDA's sync debug mode turns any synchronizing call into an error. The read itself syncs.
TEST(Cuda, DeferredReadBackStepsDoNotSynchronize) {
  train::StepConfig cfg;
  cfg.optim.lr = 1e-3;
  cfg.optim.grad_clip_norm = 1.0;
  auto pg = std::make_shared<dist::ProcessGroup>();
  auto spec = model::load_model_spec("tiny-vit");
  train::StepOptions so{true, false};
  so.read_every = 8;
  train::TrainStep step(model::create_model(spec, 0), pg, cfg, kCuda, so);
  const auto o = at::TensorOptions().device(kCuda);
  auto images = at::randint(0, 256, {16, spec.image_size, spec.image_size, 3}, o.dtype(at::kByte));
  auto tokens = at::randint(1, 1000, {16, spec.context_length}, o.dtype(at::kLong));
  tokens.select(1, 5).fill_(spec.vocab_size - 1);
  step.run({{images, tokens}}, 1e-3);  // first step: lazy initialisation may synchronize
  step.read_back();
  c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_ERROR);
  try {
    for (int i = 0; i < 7; ++i) EXPECT_FALSE(step.run({{images, tokens}}, 1e-3).read);
  } catch (const std::exception& e) {
    c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_DISABLED);
    FAIL() << "a step synchronized: " << e.what();
  }
  c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_DISABLED);
  const auto r = step.run({{images, tokens}}, 1e-3);
  ASSERT_TRUE(r.read);
  EXPECT_EQ(r.window_steps, 8);
  EXPECT_EQ(r.window_skipped, 0);
  EXPECT_TRUE(std::isfinite(r.loss));
}
