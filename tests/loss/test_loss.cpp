// Single-process CLIP and SigLIP losses against their formulas written out directly.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "chunked_loss.hpp"  // src/loss: the kernels themselves
#include "clipper/config/config.hpp"
#include "clipper/core/error.hpp"
#include "clipper/dist/all_gather.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/dist/world.hpp"
#include "clipper/loss/clip_loss.hpp"
#include "clipper/loss/siglip_loss.hpp"

namespace {

const auto kF64 = at::TensorOptions().dtype(at::kDouble);

at::Tensor unit_rows(long n, long d, std::uint64_t seed) {
  at::manual_seed(seed);
  auto x = at::randn({n, d}, kF64);
  return x / x.norm(2, {1}, true);
}

TEST(ClipLoss, MatchesTheWrittenOutFormula) {
  const long n = 5;
  const auto img = unit_rows(n, 4, 1), txt = unit_rows(n, 4, 2);
  const double s = 12.0;
  double expect = 0;
  for (long i = 0; i < n; ++i) {
    double row = 0, col = 0;
    for (long j = 0; j < n; ++j) {
      row += std::exp(s * img[i].dot(txt[j]).item<double>());
      col += std::exp(s * txt[i].dot(img[j]).item<double>());
    }
    const double diag = s * img[i].dot(txt[i]).item<double>();
    expect += (std::log(row) - diag + std::log(col) - diag) / 2;
  }
  expect /= n;
  auto pg = std::make_shared<clipper::dist::ProcessGroup>();
  clipper::loss::ClipLoss loss(pg, clipper::config::LossConfig{});
  const auto scale = at::full({}, s, kF64);
  EXPECT_NEAR(loss.forward(img, txt, scale).item<double>(), expect, 1e-12);
  // The cached labels give the same value again.
  EXPECT_NEAR(loss.forward(img, txt, scale).item<double>(), expect, 1e-12);
  // Aligned pairs at a large scale cost almost nothing.
  EXPECT_LT(loss.forward(img, img, at::full({}, 100.0, kF64)).item<double>(), 1e-3);
}

TEST(SigLipLoss, MatchesTheWrittenOutFormula) {
  const long n = 4;
  const auto img = unit_rows(n, 3, 3), txt = unit_rows(n, 3, 4);
  const double s = 10.0, b = -4.0;
  double expect = 0;
  for (long i = 0; i < n; ++i)
    for (long j = 0; j < n; ++j) {
      const double z = (i == j ? 1.0 : -1.0) * (s * img[i].dot(txt[j]).item<double>() + b);
      expect += std::log1p(std::exp(-z));  // -log(sigmoid(z))
    }
  expect /= n;
  clipper::dist::ProcessGroup single;
  clipper::config::LossConfig cfg;
  cfg.kind = clipper::config::LossKind::siglip;
  const auto got = clipper::loss::siglip_loss(img, txt, at::full({}, s, kF64),
                                              at::full({}, b, kF64), single, cfg);
  EXPECT_NEAR(got.item<double>(), expect, 1e-12);
}

// The chunked kernels on one block (one process): the same values and gradients as the plain
// forms (fp64), also for a bfloat16 input (computed in float32 by both) and with gather_with_grad
// off. make_loss itself takes the plain form on one process (less memory, the same loss).
enum class Form { plain, chunked_config, chunked_kernel };

std::vector<at::Tensor> loss_and_grads(clipper::config::LossConfig cfg, Form form,
                                       at::ScalarType dtype) {
  cfg.chunked = form == Form::chunked_config;
  auto img = unit_rows(6, 5, 7).to(dtype).requires_grad_(true);
  auto txt = unit_rows(6, 5, 8).to(dtype).requires_grad_(true);
  auto scale = at::full({1}, 11.0, kF64).requires_grad_(true);
  auto bias = at::full({}, -3.0, kF64).requires_grad_(true);
  auto pg = std::make_shared<clipper::dist::ProcessGroup>();
  const bool siglip = cfg.kind == clipper::config::LossKind::siglip;
  at::Tensor loss;
  if (form != Form::chunked_kernel)
    loss = clipper::loss::make_loss(cfg, pg)->forward(img, txt, scale, bias);
  else if (siglip)
    loss = clipper::loss::detail::chunked_siglip_loss(img, txt, scale, bias, *pg);
  else  // one process: its own rows are the columns, with gradient
    loss = clipper::loss::detail::chunked_clip_loss(img, txt, scale, *pg, true);
  loss.backward();
  std::vector<at::Tensor> out{loss.detach(), img.grad(), txt.grad(), scale.grad()};
  if (siglip) out.push_back(bias.grad());
  return out;
}

TEST(ContrastiveLoss, ChunkedKernelsEqualPlainOnOneBlock) {
  for (const auto kind : {clipper::config::LossKind::clip, clipper::config::LossKind::siglip})
    for (const bool with_grad : {true, false})
      for (const auto dtype : {at::kDouble, at::kBFloat16}) {
        clipper::config::LossConfig cfg;
        cfg.kind = kind;
        cfg.gather_with_grad = with_grad;
        const auto plain = loss_and_grads(cfg, Form::plain, dtype);
        const auto chunked = loss_and_grads(cfg, Form::chunked_kernel, dtype);
        ASSERT_EQ(plain.size(), chunked.size());
        const double tol = dtype == at::kDouble ? 1e-12 : 5e-2;  // bf16: a few ulps
        for (std::size_t i = 0; i < plain.size(); ++i) {
          EXPECT_EQ(plain[i].scalar_type(), chunked[i].scalar_type()) << i;
          EXPECT_LE(
              (plain[i].to(at::kDouble) - chunked[i].to(at::kDouble)).abs().max().item<double>(),
              tol)
              << "kind " << static_cast<int>(kind) << " value " << i;
        }
      }
}

// loss.chunked on one process is the plain form, bit for bit (before, it ran the ring kernels on
// a single block: 4.5 MiB instead of 1.25 MiB of loss memory at B=256, D=512).
TEST(ContrastiveLoss, ChunkedOnOneProcessIsThePlainForm) {
  for (const auto kind : {clipper::config::LossKind::clip, clipper::config::LossKind::siglip})
    for (const auto dtype : {at::kDouble, at::kBFloat16}) {
      clipper::config::LossConfig cfg;
      cfg.kind = kind;
      const auto plain = loss_and_grads(cfg, Form::plain, dtype);
      const auto chunked = loss_and_grads(cfg, Form::chunked_config, dtype);
      for (std::size_t i = 0; i < plain.size(); ++i)
        EXPECT_TRUE(plain[i].equal(chunked[i])) << "kind " << static_cast<int>(kind) << " " << i;
    }
}

TEST(ContrastiveLoss, ChunkedNeedsTheLocalLoss) {
  clipper::config::LossConfig cfg;
  cfg.chunked = true;
  cfg.local_loss = false;
  auto pg = std::make_shared<clipper::dist::ProcessGroup>();
  try {
    clipper::loss::make_loss(cfg, pg);
    FAIL() << "no error";
  } catch (const clipper::core::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("loss.local_loss"), std::string::npos) << e.what();
  }
}

TEST(ContrastiveLoss, FactoryAndChecks) {
  auto pg = std::make_shared<clipper::dist::ProcessGroup>();
  clipper::config::LossConfig cfg;
  EXPECT_EQ(clipper::loss::make_loss(cfg, pg)->kind(), "clip");
  cfg.kind = clipper::config::LossKind::siglip;
  auto siglip = clipper::loss::make_loss(cfg, pg);
  EXPECT_EQ(siglip->kind(), "siglip");
  const auto x = unit_rows(3, 2, 5);
  EXPECT_THROW(siglip->forward(x, x, at::full({}, 1.0, kF64), at::Tensor()),
               c10::Error);  // no bias
  EXPECT_THROW(
      siglip->forward(x, unit_rows(4, 2, 6), at::full({}, 1.0, kF64), at::full({}, 0.0, kF64)),
      c10::Error);
  // An unknown loss.kind never reaches the factory: the schema refuses it (tests/config).
}

TEST(SingleProcessGroup, CollectivesAreTheIdentity) {
  clipper::dist::ProcessGroup pg;
  EXPECT_EQ(pg.size(), 1);
  EXPECT_EQ(pg.backend_name(), "single");
  auto t = at::arange(4, kF64);
  pg.all_reduce(t);
  EXPECT_TRUE(t.equal(at::arange(4, kF64)));
  EXPECT_TRUE(pg.all_gather(t).equal(t));
  EXPECT_EQ(pg.all_reduce_max_int(7), 7);
  EXPECT_TRUE(pg.any(true));
  EXPECT_FALSE(pg.any(false));
  pg.barrier();
  auto x = at::ones({2, 2}, kF64).requires_grad_(true);
  clipper::dist::all_gather_with_grad(x, pg).sum().backward();
  EXPECT_TRUE(x.grad().equal(at::ones({2, 2}, kF64)));
}

// One process with an explicit backend: a real one-rank group (the GPU check does this with NCCL).
TEST(SingleProcessGroup, ExplicitBackendMakesARealOneRankGroup) {
  clipper::config::DistConfig cfg;
  cfg.backend = clipper::config::Backend::gloo;
  const auto pg = clipper::dist::ProcessGroup::create(clipper::dist::World{}, cfg, false);
  EXPECT_EQ(pg->size(), 1);
  EXPECT_EQ(pg->backend_name(), "gloo");
  auto t = at::arange(5, kF64);
  pg->all_reduce(t);
  EXPECT_TRUE(t.equal(at::arange(5, kF64)));
  EXPECT_TRUE(pg->all_gather(t).equal(t));
  pg->broadcast(t, 0);
  EXPECT_EQ(pg->all_reduce_int(3, clipper::dist::ReduceOp::sum), 3);
  pg->barrier();
  cfg.backend = clipper::config::Backend::nccl;  // without CUDA: refused with the reason
  EXPECT_THROW(clipper::dist::ProcessGroup::create(clipper::dist::World{}, cfg, false),
               clipper::core::InputError);
}

}  // namespace
