// Interop with the real open_clip (label interop): clipper's export loads strictly in open_clip
// with the same features, and open_clip's weights (safetensors and torch.save) load into clipper
// with the same features. fp32, CPU, random weights, identical float images and token ids.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <cstdlib>

#include <filesystem>
#include <iostream>

#include "clipper/core/atomic_file.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/io/safetensors.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/model/flops.hpp"
#include "cut_model.hpp"
#include "test_util.hpp"

namespace cio = clipper::io;
namespace cm = clipper::model;

namespace {

constexpr double kTol = 1e-5;

std::string script() {
  return clipper::test::source_path("tests/io/openclip_interop.py");
}

// Random BatchNorm weights and statistics so every ResNet branch contributes (bn3 starts at 0).
void perturb_batchnorm(cm::ClipImpl& m) {
  at::NoGradGuard g;
  at::manual_seed(5);
  for (const auto& [name, t] : m.state_dict()) {
    const bool bn =
        name.find(".bn") != std::string::npos || name.find("downsample.1.") != std::string::npos;
    if (!bn) continue;
    if (name.size() > 7 && name.substr(name.size() - 7) == ".weight") t.uniform_(0.5, 1.5);
    if (name.size() > 5 && name.substr(name.size() - 5) == ".bias") t.normal_(0, 0.1);
    if (name.find("running_mean") != std::string::npos) t.normal_(0, 0.1);
    if (name.find("running_var") != std::string::npos) t.uniform_(0.5, 1.5);
  }
}

at::Tensor make_tokens(std::int64_t b, const cm::ModelSpec& s) {
  const auto l = s.context_length, v = s.vocab_size;
  auto t = at::zeros({b, l}, at::kLong);
  for (std::int64_t i = 0; i < b; ++i) {
    const auto len = 2 + (i * 7 + 3) % (l - 2);  // tokens before the end-of-text id
    t[i][0] = v - 2;
    t[i].narrow(0, 1, len - 1).copy_(at::randint(1, v - 2, {len - 1}, at::kLong));
    t[i][len] = v - 1;
  }
  t[b - 1].fill_(5);  // one over-long row: cut, last id is end-of-text
  t[b - 1][0] = v - 2;
  t[b - 1][l - 1] = v - 1;
  return t;
}

std::map<std::string, at::Tensor> features(cm::Clip& m, const at::Tensor& images,
                                           const at::Tensor& tokens) {
  at::NoGradGuard g;
  m->eval();
  return {{"image", m->encode_image(images, false)},
          {"image_norm", m->encode_image(images, true)},
          {"text", m->encode_text(tokens, false)},
          {"text_norm", m->encode_text(tokens, true)}};
}

void expect_close(const std::map<std::string, at::Tensor>& ours,
                  const std::map<std::string, at::Tensor>& theirs, const std::string& prefix,
                  const std::string& what) {
  for (const auto& [k, v] : ours) {
    const auto& o = theirs.at(prefix + k);
    ASSERT_EQ(v.sizes(), o.sizes()) << what << " " << k;
    const double diff = (v - o).abs().max().item<double>();
    const double scale = std::max(1.0, o.abs().max().item<double>());
    // Normalized features within 1e-5 absolute; raw ones within 1e-5 of their magnitude.
    std::cout << "[interop] " << what << " " << k << ": max |diff| " << diff << ", max |value| "
              << scale << "\n";
    EXPECT_LE(diff, kTol * (k.find("norm") != std::string::npos ? 1.0 : scale))
        << what << " " << k << ": max |diff| " << diff << " (max |value| " << scale << ")";
  }
}

void run_interop(const std::string& name, const std::string& builtin, std::int64_t batch) {
  at::set_num_threads(2);
  clipper::test::TempDir dir;
  const auto spec = cm::load_model_spec(name);
  auto ours = cm::create_model(spec, 11);
  perturb_batchnorm(*ours);
  cio::export_openclip(ours, spec, dir.file("clipper"));

  at::manual_seed(17);
  const auto images = at::randn({batch, 3, spec.image_size, spec.image_size});
  const auto tokens = make_tokens(batch, spec);
  cio::save_safetensors(dir.file("inputs.safetensors"), {{"images", images}, {"tokens", tokens}});
  const auto ours_f = features(ours, images, tokens);

  const std::string cmd = clipper::test::python() + " " + script() + " --clipper-dir " +
                          dir.file("clipper") + (builtin.empty() ? "" : " --builtin " + builtin) +
                          " --inputs " + dir.file("inputs.safetensors") + " --out " +
                          dir.file("out.safetensors") + " --save-dir " + dir.file("py");
  const auto r = clipper::test::run(cmd);
  ASSERT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;
  std::map<std::string, at::Tensor> py;
  for (auto& [k, v] : cio::load_safetensors(dir.file("out.safetensors"))) py[k] = v;

  // clipper -> open_clip
  expect_close(ours_f, py, "a_", name + " clipper export in open_clip");

  // open_clip -> clipper, from safetensors and from torch.save
  for (const char* file : {"b.safetensors", "b.pt"}) {
    cm::Clip theirs(spec);
    cio::load_openclip_weights(theirs, dir.file(std::string("py/") + file));
    expect_close(features(theirs, images, tokens), py, "b_", name + " open_clip weights " + file);
  }
}

}  // namespace

TEST(OpenClipInterop, TinyViT) {
  run_interop("tiny-vit", "", 3);
}
TEST(OpenClipInterop, TinyModifiedResNet) {
  run_interop("tiny-rn", "", 3);
}
// A tokenizer whose end id is not the largest (SentencePiece): OpenCLIP's pool_type "eos".
TEST(OpenClipInterop, TinyViTEosPooling) {
  clipper::test::TempDir dir;
  auto text = clipper::core::read_file(clipper::test::source_path("configs/models/tiny-vit.yaml"));
  text.replace(text.find("  layers: 3\n"), 12, "  layers: 3\n  pool_type: eos\n  eos_id: 5\n");
  const auto path = dir.write("tiny-vit-eos.yaml", text);
  ASSERT_EQ(cm::load_model_spec(path).text_pool, cm::TextPool::eos);
  run_interop(path, "", 3);
}
// OpenAI's towers cut (tests/io/cut_model.hpp): the full-depth runs write and read 600 MB three
// times. ConfigsMatchOpenClip checks the uncut configs against open_clip's; at full depth they
// are also loaded by open_clip under their own names.
static void run_cut_openai_interop(const std::string& name) {
  if (clipper::test::interop_full_depth()) {
    std::cout << "[interop] " << name << " at full depth\n";
    run_interop(name, name, 2);
    return;
  }
  clipper::test::TempDir dir;
  run_interop(clipper::test::write_cut_model(dir, name), "", 2);
}

TEST(OpenClipInterop, ViT_B_32_TwoBlocks) {
  run_cut_openai_interop("ViT-B-32");
}
TEST(OpenClipInterop, RN50_OneBottleneckPerStage) {
  run_cut_openai_interop("RN50");
}

// Every full-size spec's model_cfg equals open_clip's own config of that name.
TEST(OpenClipInterop, ConfigsMatchOpenClip) {
  clipper::test::TempDir dir;
  std::string args;
  // The architectures that carry OpenCLIP's names (others, e.g. tiny-vit, are clipper's own).
  for (const std::string name :
       {"RN50", "RN101", "RN50x4", "ViT-B-32", "ViT-B-16", "ViT-L-14", "RN50-quickgelu",
        "RN101-quickgelu", "RN50x4-quickgelu", "ViT-B-32-quickgelu", "ViT-B-16-quickgelu",
        "ViT-L-14-quickgelu", "ViT-H-14", "ViT-g-14", "ViT-bigG-14"}) {
    const auto spec = cm::load_model_spec(name);
    const auto path = dir.write(name + ".json", cio::openclip_model_cfg_json(spec));
    args += " " + path + "=" + name;
  }
  ASSERT_FALSE(args.empty());
  const auto r =
      clipper::test::run(clipper::test::python() + " " + script() + " --check-configs" + args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("configs ok: 15"), std::string::npos) << r.output;
}

// The large towers as data: parameter counts equal open_clip's (986.11 M, 1366.68 M, 2539.57 M),
// counted by open_clip on the meta device; and ViT-H-14's export state dict has open_clip's names
// and shapes (a shape-only comparison: clipper builds the model without a forward, ~4 GB).
TEST(OpenClipInterop, LargeTowersHaveOpenClipsParameterCountsAndNames) {
  clipper::test::TempDir dir;
  std::string counts;
  for (const std::string name : {"ViT-H-14", "ViT-g-14", "ViT-bigG-14"})
    counts += name + " " + std::to_string(cm::parameter_count(cm::load_model_spec(name))) + "\n";
  std::string shapes;
  {
    const auto spec = cm::load_model_spec("ViT-H-14");
    cm::Clip m(spec);
    for (const auto& [name, t] : cio::model_state_dict(*m)) {
      shapes += name + " ";
      for (auto d : t.sizes()) shapes += std::to_string(d) + ",";
      shapes += "\n";
    }
  }
  const auto r = clipper::test::run(
      clipper::test::python() + " " + clipper::test::source_path("tests/io/large_towers.py") + " " +
      dir.write("counts.txt", counts) + " " + dir.write("shapes.txt", shapes) + " ViT-H-14");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("ViT-bigG-14: 2539.57 M parameters in both"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("ViT-H-14: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("same names and shapes"), std::string::npos) << r.output;
}

// --- SigLIP ------------------------------------------------------------------------------------

// The SigLIP family as data: every shipped SigLIP / SigLIP 2 config has open_clip's parameter
// count (open_clip builds them on the meta device) and model_cfg, and ViT-B-16-SigLIP2's state
// dict has open_clip's names and shapes (visual.trunk.*, text.*).
TEST(SiglipInterop, ShippedConfigsHaveOpenClipsCountsConfigsAndNames) {
  clipper::test::TempDir dir;
  std::string counts, configs;
  int n = 0;
  for (const auto& name : cm::list_model_specs()) {
    // The NaFlex ones are not in open_clip 3.3.0 (timm's counts: NaflexInterop).
    if (name.find("SigLIP") == std::string::npos || name.find("NaFlex") != std::string::npos)
      continue;
    const auto spec = cm::load_model_spec(name);
    counts += name + " " + std::to_string(cm::parameter_count(spec)) + "\n";
    configs += " " + dir.write(name + ".json", cio::openclip_model_cfg_json(spec)) + "=" + name;
    ++n;
  }
  EXPECT_EQ(n, 26);  // open_clip 3.3.0's SigLIP configs, less the two NLLB text towers
  std::string shapes;
  {
    cm::Clip m(cm::load_model_spec("ViT-B-16-SigLIP2"));
    for (const auto& [name, t] : cio::model_state_dict(*m)) {
      shapes += name + " ";
      for (auto d : t.sizes()) shapes += std::to_string(d) + ",";
      shapes += "\n";
    }
  }
  auto r = clipper::test::run(clipper::test::python() + " " +
                              clipper::test::source_path("tests/io/large_towers.py") + " " +
                              dir.write("counts.txt", counts) + " " +
                              dir.write("shapes.txt", shapes) + " ViT-B-16-SigLIP2");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("ViT-SO400M-14-SigLIP: 877.36 M parameters in both"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("same names and shapes"), std::string::npos) << r.output;
  r = clipper::test::run(clipper::test::python() + " " + script() + " --check-configs" + configs);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("configs ok: 26"), std::string::npos) << r.output;
}

// tiny-siglip: a timm trunk timm does not ship (the script registers it from the export's
// sizes), MAP pool, GELU tanh, bidirectional text pooled at the last position.
TEST(SiglipInterop, TinySiglip) {
  run_interop("tiny-siglip", "", 3);
}

// tiny-naflex: timm's NaFlexVit as open_clip's timm trunk (registered by the script from the
// export's sizes); square pictures through its plain [B, 3, H, W] path, weights both ways.
TEST(SiglipInterop, TinyNaflex) {
  run_interop("tiny-naflex", "", 3);
}

// The SigLIP towers cut (tests/io/cut_model.hpp) with a vocabulary of at most 32,000 (SigLIP 2's
// 256,000-row embedding would take most of a test's time). The trunk gets a name of its own
// ("<timm name>-2blocks"), registered with timm by the script; the full sizes are checked on the
// meta device (ShippedConfigsHaveOpenClipsCountsConfigsAndNames).
static void run_cut_interop(const std::string& name) {
  if (clipper::test::interop_full_depth()) {
    std::cout << "[interop] " << name << " at full depth and vocabulary\n";
    run_interop(name, "", 2);
    return;
  }
  clipper::test::TempDir dir;
  const auto vocab = cm::load_model_spec(name).vocab_size;
  run_interop(clipper::test::write_cut_model(dir, name, {vocab > 32000 ? 32000 : 0, true}), "", 2);
}

TEST(SiglipInterop, ViT_B_16_SigLIP_TwoBlocks) {
  run_cut_interop("ViT-B-16-SigLIP");
}
TEST(SiglipInterop, ViT_B_16_SigLIP2_TwoBlocks) {
  run_cut_interop("ViT-B-16-SigLIP2");
}
TEST(SiglipInterop, ViT_SO400M_14_SigLIP_TwoBlocks) {
  run_cut_interop("ViT-SO400M-14-SigLIP");
}

// Fine-tuning at another size: clipper's position-embedding resizes equal open_clip's
// resize_pos_embed (bicubic, antialiased, class token kept) and resize_text_pos_embed (linear),
// up and down.
TEST(OpenClipResize, PosEmbedsMatchOpenClipsFunctions) {
  clipper::test::TempDir dir;
  at::manual_seed(3);
  const auto image = at::randn({1 + 7 * 7, 16}), text = at::randn({20, 8});
  cio::save_safetensors(dir.file("in.safetensors"), {{"image", image}, {"text", text}});
  const std::string py = clipper::test::python() + " " +
                         clipper::test::source_path("tests/io/openclip_resize.py") + " tensors " +
                         dir.file("in.safetensors") + " " + dir.file("out.safetensors");
  for (const auto& [grid, length] : {std::pair<int, int>{10, 32}, {4, 12}}) {
    const auto r =
        clipper::test::run(py + " " + std::to_string(grid) + " " + std::to_string(length));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::map<std::string, at::Tensor> theirs;
    for (auto& [k, v] : cio::load_safetensors(dir.file("out.safetensors"))) theirs[k] = v;
    const auto ours_image = cio::resize_image_pos_embed(image, grid, "test");
    const auto ours_text = cio::resize_text_pos_embed(text, length);
    ASSERT_EQ(ours_image.sizes(), theirs["image"].sizes());
    ASSERT_EQ(ours_text.sizes(), theirs["text"].sizes());
    EXPECT_TRUE(at::equal(ours_image[0], image[0])) << "class token kept";
    EXPECT_LE((ours_image - theirs["image"]).abs().max().item<double>(), 1e-6) << "grid " << grid;
    EXPECT_LE((ours_text - theirs["text"]).abs().max().item<double>(), 1e-6) << "len " << length;
  }
}

// model.force_image_size + force_quick_gelu: weights exported at 32 px load into a 48 px model
// (grid 8 -> 12) as they do into open_clip.create_model(..., force_image_size=48,
// force_quick_gelu=True): the same features.
TEST(OpenClipResize, ForcedImageSizeLoadsLikeOpenClip) {
  at::set_num_threads(2);
  clipper::test::TempDir dir;
  const auto spec = cm::load_model_spec("tiny-vit");
  cio::export_openclip(cm::create_model(spec, 11), spec, dir.file("clipper"));
  auto big = spec;
  cm::apply_overrides(big, {48, true, -1.0});
  ASSERT_EQ(big.image_size, 48);
  ASSERT_TRUE(big.quick_gelu);
  cm::Clip ours(big);
  cio::load_openclip_weights(ours, dir.file("clipper/open_clip_model.safetensors"));
  at::manual_seed(17);
  const auto images = at::randn({2, 3, 48, 48});
  const auto tokens = make_tokens(2, big);
  cio::save_safetensors(dir.file("inputs.safetensors"), {{"images", images}, {"tokens", tokens}});
  const auto r = clipper::test::run(
      clipper::test::python() + " " + clipper::test::source_path("tests/io/openclip_resize.py") +
      " model " + dir.file("clipper") + " " + dir.file("inputs.safetensors") + " " +
      dir.file("out.safetensors") + " 48");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::map<std::string, at::Tensor> theirs;
  for (auto& [k, v] : cio::load_safetensors(dir.file("out.safetensors"))) theirs["b_" + k] = v;
  auto f = features(ours, images, tokens);
  expect_close({{"image", f.at("image")}, {"text", f.at("text")}}, theirs, "b_",
               "force_image_size=48");
}

// One description of a run's model (io::run_model_spec): a checkpoint folder of a
// model.force_image_size run describes the forced size to eval/embed (described_model) and its
// export loads in open_clip at that size, without being told, with clipper's features.
TEST(OpenClipResize, ForcedImageSizeCheckpointDescribesAndExportsItsSize) {
  at::set_num_threads(2);
  clipper::test::TempDir dir;
  auto spec = cm::load_model_spec("tiny-vit");
  cm::apply_overrides(spec, {48, false, -1.0});
  auto ours = cm::create_model(spec, 13);
  const auto ckpt = dir.file("step_00000010");
  std::filesystem::create_directories(ckpt);
  cio::save_safetensors(ckpt + "/model.safetensors", cio::model_state_dict(*ours));
  clipper::core::write_file_atomic(ckpt + "/config.yaml",
                                   "model: {name: tiny-vit, force_image_size: 48}\n");
  const auto described = cio::described_model(ckpt + "/model.safetensors");
  ASSERT_TRUE(described.has_value());
  EXPECT_EQ(described->image_size, 48);
  EXPECT_EQ(cio::architecture_difference(*described, spec), "");

  cio::export_checkpoint_openclip(ckpt, "", dir.file("export"));
  at::manual_seed(19);
  const auto images = at::randn({2, 3, 48, 48});
  const auto tokens = make_tokens(2, spec);
  cio::save_safetensors(dir.file("inputs.safetensors"), {{"images", images}, {"tokens", tokens}});
  const auto r = clipper::test::run(
      clipper::test::python() + " " + clipper::test::source_path("tests/io/openclip_resize.py") +
      " export " + dir.file("export") + " " + dir.file("inputs.safetensors") + " " +
      dir.file("out.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::map<std::string, at::Tensor> theirs;
  for (auto& [k, v] : cio::load_safetensors(dir.file("out.safetensors"))) theirs["b_" + k] = v;
  const auto f = features(ours, images, tokens);
  expect_close({{"image", f.at("image")}, {"text", f.at("text")}}, theirs, "b_",
               "checkpoint of a force_image_size=48 run");
}
