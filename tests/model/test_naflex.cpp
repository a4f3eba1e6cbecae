// The NaFlex tower without timm: the token budget rule, patch layout, padding that changes
// nothing, gradient checkpointing with padding, the spec keys and the errors.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <array>
#include <functional>
#include <string>

#include "clipper/core/error.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/model/naflex_vit.hpp"

namespace cm = clipper::model;
using HW = std::pair<std::int64_t, std::int64_t>;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const clipper::core::InputError& e) {
    return e.what();
  }
  return "";
}

std::shared_ptr<cm::NaflexVitImpl> tiny_tower(std::uint64_t seed = 3) {
  auto model = cm::create_model(cm::load_model_spec("tiny-naflex"), seed);
  auto t = std::dynamic_pointer_cast<cm::NaflexVitImpl>(model->visual);
  at::NoGradGuard g;
  at::manual_seed(5);
  for (auto& p : t->parameters()) p.add_(at::randn_like(p) * 0.05);  // every weight matters
  return t;
}

}  // namespace

// timm's get_image_size_for_seq: the largest patch-rounded scale within the budget, each side at
// least one patch (values from timm 1.0.31).
TEST(Naflex, ImageSizeUnderABudget) {
  EXPECT_EQ(cm::naflex_image_size(32, 128, 8, 16), HW(16, 64));
  EXPECT_EQ(cm::naflex_image_size(256, 256, 16, 256), HW(256, 256));
  EXPECT_EQ(cm::naflex_image_size(1000, 10, 16, 4), HW(64, 16));
  EXPECT_EQ(cm::naflex_image_size(5, 7, 8, 12), HW(24, 32));
  EXPECT_EQ(cm::naflex_image_size(64, 96, 16, 1), HW(16, 16));
  EXPECT_NE(error_of([] { cm::naflex_image_size(32, 32, 8, 0); }).find("at least 1 patch"),
            std::string::npos);
}

// Patches are flattened (row, column, channel), channel fastest, in row-major grid order.
TEST(Naflex, PatchLayoutAndCoordinates) {
  auto img = at::arange(3 * 4 * 6, at::kFloat).view({3, 4, 6});
  const auto p = cm::naflex_patchify(img, 2, 6, cm::Interpolation::bilinear);
  ASSERT_EQ(p.grid_h, 2);
  ASSERT_EQ(p.grid_w, 3);
  ASSERT_EQ(p.patches.sizes(), (std::vector<std::int64_t>{6, 12}));
  // patch (1, 2): rows 2-3, columns 4-5; value index = c*24 + y*6 + x.
  const auto q = p.patches[5];
  EXPECT_EQ(q[0].item<float>(), 0 * 24 + 2 * 6 + 4);  // (y 0, x 0, c 0)
  EXPECT_EQ(q[1].item<float>(), 1 * 24 + 2 * 6 + 4);  // c 1
  EXPECT_EQ(q[3].item<float>(), 0 * 24 + 2 * 6 + 5);  // x 1
  EXPECT_EQ(q[6].item<float>(), 0 * 24 + 3 * 6 + 4);  // y 1
  EXPECT_TRUE(at::equal(p.coord[5], at::tensor({1, 2}, at::kLong)));
}

// A picture's features do not depend on the padding around it or on its batch neighbours.
TEST(Naflex, PaddingChangesNothing) {
  auto tower = tiny_tower();
  tower->eval();
  at::NoGradGuard g;
  at::manual_seed(1);
  const auto a = cm::naflex_patchify(at::randn({3, 20, 50}), 8, 12, cm::Interpolation::bicubic);
  const auto b = cm::naflex_patchify(at::randn({3, 64, 64}), 8, 30, cm::Interpolation::bicubic);
  const auto alone = tower->forward_patches(cm::naflex_collate({a}));
  auto batch = cm::naflex_collate({a, b}, 40);
  batch.patches.masked_fill_(~batch.valid.unsqueeze(-1), 7.0);  // whatever sits in the padding
  const auto both = tower->forward_patches(batch);
  EXPECT_LE((both[0] - alone[0]).abs().max().item<double>(), 1e-5);
  // Square pictures through the plain path equal their patches.
  const auto sq = at::randn({2, 3, 32, 32});
  const auto plain = tower->forward(sq);
  const auto patched = tower->forward_patches(cm::naflex_patchify_batch(sq, 8));
  EXPECT_LE((plain - patched).abs().max().item<double>(), 1e-6);
}

// Gradient checkpointing recomputes each block with the same mask: same loss, same gradients.
TEST(Naflex, CheckpointingWithPaddingKeepsGradients) {
  at::manual_seed(2);
  const auto a = cm::naflex_patchify(at::randn({3, 24, 40}), 8, 9, cm::Interpolation::bilinear);
  const auto b = cm::naflex_patchify(at::randn({3, 40, 40}), 8, 25, cm::Interpolation::bilinear);
  const auto batch = cm::naflex_collate({a, b});
  std::vector<at::Tensor> grads[2];
  for (int ckpt = 0; ckpt < 2; ++ckpt) {
    auto tower = tiny_tower(9);
    tower->train();
    tower->set_grad_checkpointing(ckpt == 1);
    tower->forward_patches(batch).pow(2).sum().backward();
    for (const auto& p : tower->parameters()) grads[ckpt].push_back(p.grad().clone());
  }
  ASSERT_EQ(grads[0].size(), grads[1].size());
  for (std::size_t i = 0; i < grads[0].size(); ++i)
    EXPECT_LE((grads[0][i] - grads[1][i]).abs().max().item<double>(), 1e-5) << i;
}

// Packing (issue 28, item 3): rows filled first-fit decreasing, the longest picture first.
TEST(Naflex, PackingPlanFirstFitDecreasing) {
  const auto p = cm::naflex_pack({16, 3, 10, 6, 1}, 16);
  EXPECT_EQ(p.rows, 3);  // [16], [10, 6], [3, 1]
  EXPECT_EQ(p.row, (std::vector<std::int64_t>{0, 2, 1, 1, 2}));
  EXPECT_EQ(p.offset, (std::vector<std::int64_t>{0, 0, 0, 10, 3}));
  EXPECT_EQ(p.tokens, 36);
  EXPECT_DOUBLE_EQ(p.padded_share(), 1.0 - 36.0 / 48.0);
  EXPECT_NE(error_of([] { cm::naflex_pack({17}, 16); }).find("picture 0 has 17 patches"),
            std::string::npos);
}

// Several pictures packed into one row with a block-diagonal mask give each picture the features
// and the gradients it has alone and in a padded batch (with and without checkpointing).
TEST(Naflex, PackedRowsEqualPaddedBatchesPerPicture) {
  at::manual_seed(4);
  std::vector<cm::NaflexPatches> pics;
  const std::vector<std::array<std::int64_t, 3>> shapes{{20, 50, 12}, {64, 64, 30}, {8, 40, 5},
                                                        {40, 16, 10}, {16, 16, 4},  {30, 8, 3}};
  for (const auto& [h, w, budget] : shapes)
    pics.push_back(
        cm::naflex_patchify(at::randn({3, h, w}), 8, budget, cm::Interpolation::bilinear));
  const auto batch = cm::naflex_collate(pics, 30);
  auto tower = tiny_tower(6);
  tower->eval();
  {
    at::NoGradGuard g;
    tower->trunk->packing = true;
    const auto packed = tower->forward_patches(batch);
    EXPECT_LT(tower->trunk->last_run_padded_share, 0.2);  // 2 rows of 30 hold 57 patches
    EXPECT_GT(tower->trunk->last_padded_share, 0.6);      // 6 rows of 30
    tower->trunk->packing = false;
    const auto padded = tower->forward_patches(batch);
    EXPECT_DOUBLE_EQ(tower->trunk->last_run_padded_share, tower->trunk->last_padded_share);
    for (std::size_t i = 0; i < pics.size(); ++i) {
      const auto alone = tower->forward_patches(cm::naflex_collate({pics[i]}))[0];
      const auto k = static_cast<std::int64_t>(i);
      EXPECT_LE((packed[k] - alone).abs().max().item<double>(), 1e-5) << i;
      EXPECT_LE((packed[k] - padded[k]).abs().max().item<double>(), 1e-5) << i;
    }
  }
  tower->train();
  for (bool ckpt : {false, true}) {
    std::vector<at::Tensor> grads[2];
    for (int packing = 0; packing < 2; ++packing) {
      tower->zero_grad();
      tower->set_grad_checkpointing(ckpt);
      tower->trunk->packing = packing == 1;
      tower->forward_patches(batch).pow(2).sum().backward();
      for (const auto& p : tower->parameters()) grads[packing].push_back(p.grad().clone());
    }
    for (std::size_t i = 0; i < grads[0].size(); ++i)
      EXPECT_LE((grads[0][i] - grads[1][i]).abs().max().item<double>(), 1e-5)
          << "parameter " << i << (ckpt ? " (checkpointed)" : "");
  }
  tower->set_grad_checkpointing(false);
}

TEST(Naflex, BadInputsAreNamed) {
  auto tower = tiny_tower();
  auto batch = cm::naflex_collate(
      {cm::naflex_patchify(at::randn({3, 16, 16}), 8, 4, cm::Interpolation::bilinear)});
  auto none = batch;
  none.valid = at::zeros_like(batch.valid);
  EXPECT_NE(error_of([&] { tower->forward_patches(none); }).find("picture 0 has no valid patch"),
            std::string::npos);
  auto wide = batch;
  wide.patches = at::zeros({1, 4, 100});
  EXPECT_NE(error_of([&] { tower->forward_patches(wide); }).find("[B, N, 192]"), std::string::npos);
  EXPECT_NE(error_of([&] {
              tower->forward(at::zeros({1, 3, 20, 16}));
            }).find("whole patches"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              cm::naflex_collate(
                  {cm::naflex_patchify(at::randn({3, 64, 64}), 8, 64, cm::Interpolation::bilinear)},
                  10);
            }).find("does not fit a sequence of 10"),
            std::string::npos);
}

TEST(Naflex, SpecKeysGroupsAndCost) {
  const auto s = cm::load_model_spec("tiny-naflex");
  EXPECT_EQ(s.image_tower, cm::ImageTowerKind::naflex_vit);
  EXPECT_EQ(s.pos_embed_grid, 4);
  EXPECT_EQ(s.pos_embed_interp, cm::Interpolation::bilinear);
  auto tower = cm::make_image_tower(s);
  EXPECT_EQ(tower->lock_groups().size(), static_cast<std::size_t>(s.vision_layers + 3));
  std::int64_t n = 0;
  for (const auto& p : tower->parameters()) n += p.numel();
  EXPECT_EQ(n, cm::image_tower_cost(s, false).params);
  const std::string bad =
      "embed_dim: 64\nvision_cfg: {tower: naflex_vit, image_size: 32, layers: 1, width: 64, "
      "patch_size: 8, pos_embed_grid: 0}\n"
      "text_cfg: {context_length: 8, vocab_size: 100, width: 64, heads: 1, layers: 1}\n";
  EXPECT_NE(error_of([&] { cm::parse_model_spec(bad, "m", "m.yaml"); }).find("pos_embed_grid"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              cm::parse_model_spec("embed_dim: 8\nvision_cfg: {tower: naflex}\ntext_cfg: {}\n", "m",
                                   "m.yaml");
            }).find("naflex_vit"),
            std::string::npos);
}
