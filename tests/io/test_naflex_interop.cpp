// The NaFlex tower against timm 1.0.31's NaFlexVit (label interop; tests/io/naflex_interop.py):
// clipper's tower weights, saved under timm's names, load strictly in timm with the same
// features, and timm's weights load into clipper with the same features, for single pictures of
// several shapes and budgets (square, 1:4, 5:2, a few pixels, a large budget), for all of them
// padded into one batch, and for square pictures through the plain [B, 3, H, W] path; the patches
// naflex_patchify cuts equal timm's ResizeToSequence + Patchify. fp32, CPU, random weights.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "clipper/io/safetensors.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/model/flops.hpp"
#include "clipper/model/naflex_vit.hpp"
#include "test_util.hpp"

namespace cio = clipper::io;
namespace cm = clipper::model;

namespace {

constexpr double kTol = 1e-5;
const std::string kPrefix = "trunk.";

std::string script() {
  return clipper::test::source_path("tests/io/naflex_interop.py");
}

struct Picture {
  std::int64_t h, w, budget;
  bool bicubic;
};

// The shapes every interop test runs: square, 1:4, 5:2, a few pixels (upscaled), a large budget,
// a budget of one patch, and the position table's own grid.
std::vector<Picture> pictures(std::int64_t patch, std::int64_t large) {
  return {{3 * patch, 3 * patch, 36, true},      {4 * patch, 16 * patch, 16, true},
          {4 * patch, 10 * patch, 30, false},    {5, 7, 12, true},
          {20 * patch, 30 * patch, large, true}, {2 * patch, 3 * patch, 1, false},
          {patch * 4, patch * 4, 16, false}};
}

nlohmann::json trunk_json(const cm::ModelSpec& s, std::int64_t cut_depth) {
  return {{"timm_model_name", s.timm_model_name},
          {"patch_size", s.patch_size},
          {"embed_dim", s.vision_width},
          {"depth", s.vision_layers},
          {"num_heads", s.vision_heads()},
          {"mlp_ratio", s.vision_mlp_ratio},
          {"act", cm::name_of(s.vision_act)},
          {"norm_eps", s.vision_norm_eps},
          {"global_pool", cm::name_of(s.vision_pool)},
          {"pos_embed_grid", s.pos_embed_grid},
          {"pos_embed_interp", cm::name_of(s.pos_embed_interp)},
          {"cut_depth", cut_depth}};
}

// Every parameter moved off its init so each one shows in the features.
void randomize(cm::NaflexVitImpl& tower) {
  at::NoGradGuard g;
  at::manual_seed(23);
  for (auto& p : tower.parameters()) p.add_(at::randn_like(p) * 0.05);
}

cio::TensorList timm_weights(cm::NaflexVitImpl& tower) {
  cio::TensorList out;
  for (const auto& item : tower.named_parameters()) {
    EXPECT_EQ(item.key().rfind(kPrefix, 0), 0u) << item.key();
    out.emplace_back(item.key().substr(kPrefix.size()), item.value().detach().contiguous());
  }
  return out;
}

// timm's state dict into the tower, strictly: every name once, same shapes.
void load_timm_weights(cm::NaflexVitImpl& tower, const std::string& path) {
  std::map<std::string, at::Tensor> theirs;
  for (auto& [k, v] : cio::load_safetensors(path)) theirs[k] = v;
  at::NoGradGuard g;
  std::size_t used = 0;
  for (auto& item : tower.named_parameters()) {
    const auto& name = item.key();
    auto& t = item.value();
    const auto it = theirs.find(name.substr(kPrefix.size()));
    ASSERT_NE(it, theirs.end()) << "timm has no " << name;
    ASSERT_EQ(it->second.sizes(), t.sizes()) << name;
    t.copy_(it->second);
    ++used;
  }
  EXPECT_EQ(used, theirs.size()) << "timm's state dict has tensors clipper's tower lacks";
}

struct Ours {
  std::map<std::string, at::Tensor> features;
  std::vector<cm::NaflexPatches> patches;
  at::Tensor packed;  // the batch packed into rows: row i is picture i's features
  double packed_share = 0, padded_share = 0;
};

// Packed rows against timm's NaFlexVit on each picture alone (issue 28, item 3).
void expect_packed_close(const Ours& ours, const std::map<std::string, at::Tensor>& theirs,
                         const std::string& prefix, const std::string& what) {
  std::cout << "[naflex] " << what << " packed: padding " << ours.padded_share << " of the batch, "
            << ours.packed_share << " of the packed rows\n";
  EXPECT_LT(ours.packed_share, ours.padded_share) << what;
  for (std::int64_t i = 0; i < ours.packed.size(0); ++i) {
    const auto& o = theirs.at(prefix + std::to_string(i));
    const double diff = (ours.packed[i] - o[0]).abs().max().item<double>();
    const double scale = std::max(1.0, o.abs().max().item<double>());
    std::cout << "[naflex] " << what << " packed " << i << ": max |diff| " << diff << "\n";
    EXPECT_LE(diff, kTol * scale) << what << " packed picture " << i;
  }
}

Ours our_features(cm::NaflexVitImpl& tower, const std::vector<at::Tensor>& images,
                  const std::vector<Picture>& pics, std::int64_t seq_len,
                  const std::function<at::Tensor()>& square) {
  at::NoGradGuard g;
  tower.eval();
  Ours o;
  for (std::size_t i = 0; i < images.size(); ++i) {
    o.patches.push_back(cm::naflex_patchify(
        images[i], tower.trunk->patch_size, pics[i].budget,
        pics[i].bicubic ? cm::Interpolation::bicubic : cm::Interpolation::bilinear));
    o.features[std::to_string(i)] = tower.forward_patches(cm::naflex_collate({o.patches.back()}));
  }
  const auto batch = cm::naflex_collate(o.patches, seq_len);
  tower.trunk->packing = false;
  o.features["batch"] = tower.forward_patches(batch);  // padded, as timm runs it
  tower.trunk->packing = true;
  o.packed = tower.forward_patches(batch);  // several pictures per row, block-diagonal
  o.packed_share = tower.trunk->last_run_padded_share;
  o.padded_share = tower.trunk->last_padded_share;
  o.features["square"] = square();
  return o;
}

void expect_close(const std::map<std::string, at::Tensor>& ours,
                  const std::map<std::string, at::Tensor>& theirs, const std::string& prefix,
                  const std::string& what) {
  for (const auto& [k, v] : ours) {
    const auto& o = theirs.at(prefix + k);
    ASSERT_EQ(v.sizes(), o.sizes()) << what << " " << k;
    const double diff = (v - o).abs().max().item<double>();
    const double scale = std::max(1.0, o.abs().max().item<double>());
    std::cout << "[naflex] " << what << " " << k << ": max |diff| " << diff << ", max |value| "
              << scale << "\n";
    EXPECT_LE(diff, kTol * scale) << what << " " << k << ": max |diff| " << diff;
  }
}

// `square` runs [2, 3, S, S] pictures through the plain path (the tower's forward, or the CLIP
// model's encode_image).
void run_naflex_interop(const cm::ModelSpec& spec, cm::NaflexVitImpl& tower,
                        const std::function<at::Tensor(const at::Tensor&)>& square,
                        std::int64_t cut_depth, std::int64_t large_budget) {
  at::set_num_threads(2);
  clipper::test::TempDir dir;
  randomize(tower);
  cio::save_safetensors(dir.file("clipper.safetensors"), timm_weights(tower));
  const auto pics = pictures(spec.patch_size, large_budget);
  at::manual_seed(17);
  cio::TensorList inputs;
  std::vector<at::Tensor> images;
  std::int64_t seq_len = 0;
  for (std::size_t i = 0; i < pics.size(); ++i) {
    images.push_back(at::randn({3, pics[i].h, pics[i].w}));
    const auto n = std::to_string(i);
    inputs.emplace_back("img" + n, images.back());
    inputs.emplace_back("budget" + n, at::full({1}, pics[i].budget, at::kLong));
    inputs.emplace_back("bicubic" + n, at::full({1}, pics[i].bicubic ? 1 : 0, at::kLong));
    seq_len = std::max(seq_len, pics[i].budget);
  }
  const auto sq = at::randn({2, 3, spec.image_size, spec.image_size});
  inputs.emplace_back("seq_len", at::full({1}, seq_len, at::kLong));
  inputs.emplace_back("square", sq);
  cio::save_safetensors(dir.file("inputs.safetensors"), inputs);
  dir.write("trunk.json", trunk_json(spec, cut_depth).dump());
  auto run_square = [&] { return square(sq); };
  const auto ours = our_features(tower, images, pics, seq_len, run_square);

  const std::string cmd = clipper::test::python() + " " + script() + " --trunk " +
                          dir.file("trunk.json") + " --weights " + dir.file("clipper.safetensors") +
                          " --inputs " + dir.file("inputs.safetensors") + " --out " +
                          dir.file("out.safetensors") + " --save-dir " + dir.file("py");
  const auto r = clipper::test::run(cmd);
  ASSERT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;
  std::map<std::string, at::Tensor> py;
  for (auto& [k, v] : cio::load_safetensors(dir.file("out.safetensors"))) py[k] = v;

  // naflex_patchify == timm's ResizeToSequence + Patchify
  for (std::size_t i = 0; i < pics.size(); ++i) {
    const auto n = std::to_string(i);
    const auto& p = ours.patches[i];
    ASSERT_EQ(p.patches.sizes(), py.at("p_" + n).sizes()) << "picture " << i;
    EXPECT_LE((p.patches - py.at("p_" + n)).abs().max().item<double>(), kTol) << "picture " << i;
    EXPECT_TRUE(at::equal(p.coord, py.at("c_" + n))) << "picture " << i;
    EXPECT_EQ(p.grid_h * p.grid_w, p.patches.size(0));
    EXPECT_LE(p.patches.size(0), pics[i].budget);
    std::cout << "[naflex] picture " << i << ": " << pics[i].h << "x" << pics[i].w << ", budget "
              << pics[i].budget << " -> " << p.grid_h << "x" << p.grid_w << " patches\n";
  }
  expect_close(ours.features, py, "a_", spec.name + " clipper weights in timm");
  expect_packed_close(ours, py, "a_", spec.name + " clipper weights in timm");
  load_timm_weights(tower, dir.file("py/b.safetensors"));
  const auto back = our_features(tower, images, pics, seq_len, run_square);
  expect_close(back.features, py, "b_", spec.name + " timm weights in clipper");
  expect_packed_close(back, py, "b_", spec.name + " timm weights in clipper");
}

std::shared_ptr<cm::NaflexVitImpl> naflex_tower(const std::shared_ptr<cm::ImageTowerImpl>& t) {
  auto n = std::dynamic_pointer_cast<cm::NaflexVitImpl>(t);
  EXPECT_TRUE(n != nullptr);
  return n;
}

}  // namespace

// clipper's tiny NaFlex model, registered with timm from its sizes; square pictures through the
// CLIP model's encode_image.
TEST(NaflexInterop, TinyNaflex) {
  const auto spec = cm::load_model_spec("tiny-naflex");
  auto model = cm::create_model(spec, 3);
  auto tower = naflex_tower(model->visual);
  ASSERT_TRUE(tower);
  run_naflex_interop(
      spec, *tower, [&](const at::Tensor& x) { return model->encode_image(x, false); }, 0, 1024);
}

// timm's naflexvit_base_patch16_siglip, every size as shipped but 2 blocks; the large budget is
// timm's eval default, 576 (1024 is TinyNaflex's), to stay within the test time.
TEST(NaflexInterop, NaflexViT_B_16_SigLIP2_TwoBlocks) {
  auto spec = cm::load_model_spec("ViT-B-16-SigLIP2-NaFlex");
  spec.vision_layers = 2;
  auto tower = naflex_tower(cm::make_image_tower(spec));
  ASSERT_TRUE(tower);
  run_naflex_interop(
      spec, *tower, [&](const at::Tensor& x) { return tower->forward(x); }, 2, 576);
}

// The shipped NaFlex configs have timm's parameter counts (timm builds them on the meta device),
// and the B/16 tower clipper builds has timm's names and shapes.
TEST(NaflexInterop, ShippedConfigsHaveTimmsCountsAndNames) {
  std::string args;
  for (const std::string name : {"ViT-B-16-SigLIP2-NaFlex", "ViT-SO400M-16-SigLIP2-NaFlex"}) {
    const auto spec = cm::load_model_spec(name);
    args +=
        " " + spec.timm_model_name + "=" + std::to_string(cm::image_tower_cost(spec, false).params);
  }
  const auto spec = cm::load_model_spec("ViT-B-16-SigLIP2-NaFlex");
  auto tower = cm::make_image_tower(spec);
  std::string shapes;
  std::int64_t built = 0;
  for (const auto& item : tower->named_parameters()) {
    shapes += item.key().substr(kPrefix.size()) + " ";
    for (auto d : item.value().sizes()) shapes += std::to_string(d) + ",";
    shapes += "\n";
    built += item.value().numel();
  }
  EXPECT_EQ(built, cm::image_tower_cost(spec, false).params);
  clipper::test::TempDir dir;
  const auto r = clipper::test::run(clipper::test::python() + " " + script() + " --names " +
                                    spec.timm_model_name + " " + dir.write("shapes.txt", shapes) +
                                    " --count" + args);
  std::cout << r.output;
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("counts ok"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("same names and shapes"), std::string::npos) << r.output;
}
