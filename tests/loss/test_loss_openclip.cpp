// Our single-process CLIP and SigLIP losses and their gradients against open_clip's (the
// distributed ones equal these: tests/dist). open_clip runs as the real client, in Python.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>

#include "clipper/config/config.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/loss/clip_loss.hpp"
#include "clipper/loss/siglip_loss.hpp"
#include "test_util.hpp"

namespace {

using clipper::test::TempDir;

void compare_with_open_clip(const std::string& kind) {
  const long n = 6, d = 5;
  at::manual_seed(7);
  const auto opt = at::TensorOptions().dtype(at::kDouble);
  auto img = at::randn({n, d}, opt);
  auto txt = at::randn({n, d}, opt);
  img = (img / img.norm(2, {1}, true)).requires_grad_(true);
  txt = (txt / txt.norm(2, {1}, true)).requires_grad_(true);
  auto scale = at::full({}, kind == "clip" ? 14.3 : 10.0, opt).requires_grad_(true);
  auto bias = at::full({}, -3.0, opt).requires_grad_(true);

  TempDir dir;
  {
    auto flat = at::cat({img.detach().reshape(-1), txt.detach().reshape(-1),
                         scale.detach().reshape(1), bias.detach().reshape(1)})
                    .contiguous();
    std::ofstream(dir.file("in.bin"), std::ios::binary)
        .write(reinterpret_cast<const char*>(flat.data_ptr<double>()),
               flat.numel() * sizeof(double));
  }
  const auto r = clipper::test::run(clipper::test::python() + " " +
                                    clipper::test::source_path("tests/loss/openclip_loss.py") +
                                    " " + dir.file("in.bin") + " " + dir.file("out.bin") + " " +
                                    std::to_string(n) + " " + std::to_string(d) + " " + kind);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const long total = 1 + 2 * n * d + 2;
  auto ref = at::empty({total}, opt);
  std::ifstream(dir.file("out.bin"), std::ios::binary)
      .read(reinterpret_cast<char*>(ref.data_ptr<double>()), total * sizeof(double));

  clipper::dist::ProcessGroup single;
  clipper::config::LossConfig cfg;
  cfg.kind = clipper::config::parse_choice<clipper::config::LossKind>(kind);
  at::Tensor loss = kind == "clip" ? clipper::loss::clip_loss(img, txt, scale, single, cfg)
                                   : clipper::loss::siglip_loss(img, txt, scale, bias, single, cfg);
  loss.backward();
  EXPECT_NEAR(loss.item<double>(), ref[0].item<double>(), 1e-12);
  EXPECT_LT((img.grad().reshape(-1) - ref.narrow(0, 1, n * d)).abs().max().item<double>(), 1e-12);
  EXPECT_LT((txt.grad().reshape(-1) - ref.narrow(0, 1 + n * d, n * d)).abs().max().item<double>(),
            1e-12);
  EXPECT_NEAR(scale.grad().item<double>(), ref[1 + 2 * n * d].item<double>(), 1e-12);
  if (kind == "siglip")
    EXPECT_NEAR(bias.grad().item<double>(), ref[2 + 2 * n * d].item<double>(), 1e-12);
}

TEST(LossOpenClip, ClipLossAndGradientsMatchOpenClip) {
  compare_with_open_clip("clip");
}
TEST(LossOpenClip, SigLipLossAndGradientsMatchOpenClip) {
  compare_with_open_clip("siglip");
}

// loss.distill_from: ClipLoss::forward_distill against open_clip's DistillClipLoss on the same
// features (a teacher of another embedding width), both terms and the gradients of their sum.
TEST(LossOpenClip, DistillClipLossAndGradientsMatchOpenClip) {
  const long n = 6, d = 5, dt = 3;
  at::manual_seed(11);
  const auto opt = at::TensorOptions().dtype(at::kDouble);
  auto unit = [&](long cols) {
    auto x = at::randn({n, cols}, opt);
    return x / x.norm(2, {1}, true);
  };
  auto img = unit(d).requires_grad_(true), txt = unit(d).requires_grad_(true);
  auto scale = at::full({}, 14.3, opt).requires_grad_(true);
  const auto t_img = unit(dt), t_txt = unit(dt), t_scale = at::full({}, 30.0, opt);
  TempDir dir;
  {
    auto flat =
        at::cat({img.detach().reshape(-1), txt.detach().reshape(-1), scale.detach().reshape(1),
                 t_img.reshape(-1), t_txt.reshape(-1), t_scale.reshape(1)})
            .contiguous();
    std::ofstream(dir.file("in.bin"), std::ios::binary)
        .write(reinterpret_cast<const char*>(flat.data_ptr<double>()),
               flat.numel() * sizeof(double));
  }
  const auto r =
      clipper::test::run(clipper::test::python() + " " +
                         clipper::test::source_path("tests/loss/openclip_distill_loss.py") + " " +
                         dir.file("in.bin") + " " + dir.file("out.bin") + " " + std::to_string(n) +
                         " " + std::to_string(d) + " " + std::to_string(dt));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const long total = 2 + 2 * n * d + 1;
  auto ref = at::empty({total}, opt);
  std::ifstream(dir.file("out.bin"), std::ios::binary)
      .read(reinterpret_cast<char*>(ref.data_ptr<double>()), total * sizeof(double));

  auto single = std::make_shared<clipper::dist::ProcessGroup>();
  clipper::loss::ClipLoss loss(single, clipper::config::LossConfig{});
  const auto terms = loss.forward_distill(img, txt, scale, t_img, t_txt, t_scale);
  (terms.contrastive + terms.distill).backward();
  EXPECT_NEAR(terms.contrastive.item<double>(), ref[0].item<double>(), 1e-12);
  EXPECT_NEAR(terms.distill.item<double>(), ref[1].item<double>(), 1e-12);
  EXPECT_GT(terms.distill.item<double>(), 0.1);  // the teacher disagrees: a real term
  EXPECT_LT((img.grad().reshape(-1) - ref.narrow(0, 2, n * d)).abs().max().item<double>(), 1e-12);
  EXPECT_LT((txt.grad().reshape(-1) - ref.narrow(0, 2 + n * d, n * d)).abs().max().item<double>(),
            1e-12);
  EXPECT_NEAR(scale.grad().item<double>(), ref[2 + 2 * n * d].item<double>(), 1e-12);
}

}  // namespace
