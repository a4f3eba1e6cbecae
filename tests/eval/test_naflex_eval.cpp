// NaFlex evaluation inputs (issue 28, item 4): `clipper embed` (and the benchmark reader and the
// eval loader, which share ImageProcessor's NaFlex mode) feed a NaFlex model each picture at its
// own aspect ratio under the model's token budget, exactly as the tower computes it from the
// picture directly: the size rule, PIL's resize of the 8-bit pixels, the patch cut, the
// normalization.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "../data/fixtures.hpp"
#include "clipper/core/atomic_file.hpp"
#include "clipper/eval/embed.hpp"
#include "clipper/model/naflex_patches.hpp"
#include "test_util.hpp"

using namespace clipper;
namespace cm = clipper::model;

namespace {

// The tower's features of a picture (RGB uint8 [H, W, 3]) with NaFlex preprocessing done here:
// the budget's size, the uint8 antialiased resize with the model's filter (PIL's, as the data
// part does), normalization, then the patches of the resized picture.
at::Tensor direct_features(cm::ClipImpl& model, const at::Tensor& rgb) {
  const auto& s = model.spec();
  const auto [h, w] = cm::naflex_image_size(rgb.size(0), rgb.size(1), s.patch_size, s.max_seq_len);
  auto x = rgb.permute({2, 0, 1}).unsqueeze(0).contiguous();
  if (h != x.size(2) || w != x.size(3))
    x = s.interpolation == cm::Interpolation::bicubic
            ? at::_upsample_bicubic2d_aa(x, {h, w}, false)
            : at::_upsample_bilinear2d_aa(x, {h, w}, false);
  auto f = x[0].to(at::kFloat).div(255.0);
  for (int c = 0; c < 3; ++c) f[c].sub_(s.mean[c]).div_(s.std[c]);
  const auto p = cm::naflex_patchify(f, s.patch_size, s.max_seq_len, s.interpolation);
  EXPECT_EQ(p.grid_h * s.patch_size, h);
  EXPECT_EQ(p.grid_w * s.patch_size, w);
  auto feats = model.visual_naflex->forward_patches(cm::naflex_collate({p}));
  return feats / feats.norm(2, -1, true);
}

}  // namespace

TEST(NaflexEval, EmbedFeedsEachPictureAtItsAspectRatio) {
  at::set_num_threads(1);
  test::TempDir d;
  const auto spec = cm::load_model_spec("tiny-naflex");
  ASSERT_TRUE(spec.naflex_inputs());
  auto model = cm::create_model(spec, 5);
  model->eval();
  at::NoGradGuard g;
  // 30 x 70 (tall, downscaled to 3 x 5 patches), 200 x 90 (wide), 24 x 16 (kept as it is).
  const std::vector<std::pair<int, int>> sizes{{30, 70}, {200, 90}, {24, 16}};
  std::vector<std::string> paths;
  std::vector<at::Tensor> pictures;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const auto [w, h] = sizes[i];
    const auto bgr = test::test_image(w, h, static_cast<int>(i) + 3);
    paths.push_back(d.file("p" + std::to_string(i) + ".png"));
    core::write_file_atomic(paths.back(), test::encode(bgr, ".png"));
    cv::Mat rgb;
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    pictures.push_back(at::from_blob(rgb.data, {h, w, 3}, at::kByte).clone());
  }
  const auto embedded = eval::embed_images(*model, paths, 2, at::kCPU);
  ASSERT_EQ(embedded.size(0), 3);
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const auto want = direct_features(*model, pictures[i])[0];
    const double diff = (embedded[static_cast<std::int64_t>(i)] - want).abs().max().item<double>();
    EXPECT_LE(diff, 1e-5) << "picture " << i;
  }
  // The tall picture really is not square on the way in: 3 columns by 5 rows of 8 pixels.
  EXPECT_EQ(cm::naflex_image_size(70, 30, 8, 16), (std::pair<std::int64_t, std::int64_t>{40, 24}));
}
