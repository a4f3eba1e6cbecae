// OpenCLIP-format export and import without Python: the files, strict loading and its errors,
// torch.save-format state dicts, the `clipper export` and `clipper models` verbs.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/dist/flat_layout.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/optim/sharded_adamw.hpp"
#include "test_util.hpp"

namespace cio = clipper::io;
namespace cm = clipper::model;
using clipper::core::InputError;
using clipper::test::error_of;

namespace {

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

void expect_same_state(const cm::Clip& a, const cm::Clip& b) {
  const auto sa = a->state_dict(), sb = b->state_dict();
  ASSERT_EQ(sa.size(), sb.size());
  for (std::size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i].first, sb[i].first);
    EXPECT_TRUE(at::equal(sa[i].second, sb[i].second)) << sa[i].first;
  }
}

void write_pickle(const std::string& path, const c10::IValue& v) {
  const auto bytes = torch::jit::pickle_save(v);
  std::ofstream(path, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

TEST(OpenClipExport, WritesWeightsAndConfigThatLoadBack) {
  clipper::test::TempDir dir;
  for (const char* name : {"tiny-vit", "tiny-rn"}) {
    const auto spec = cm::load_model_spec(name);
    auto a = cm::create_model(spec, 1);
    const auto out = dir.file(name);
    cio::export_openclip(a, spec, out);
    const auto cfg =
        nlohmann::json::parse(clipper::core::read_file(out + "/open_clip_config.json"));
    const auto& mc = cfg.at("model_cfg");
    EXPECT_EQ(mc.at("embed_dim"), spec.embed_dim);
    EXPECT_EQ(mc.at("quick_gelu"), false);
    EXPECT_EQ(mc.at("text_cfg").at("context_length"), 32);
    EXPECT_EQ(mc.at("text_cfg").at("heads"), 2);
    if (spec.is_resnet()) {
      EXPECT_EQ(mc.at("vision_cfg").at("layers"), nlohmann::json::array({1, 1, 1, 1}));
      EXPECT_TRUE(mc.at("vision_cfg").at("patch_size").is_null());
    } else {
      EXPECT_EQ(mc.at("vision_cfg").at("patch_size"), 4);
    }
    EXPECT_EQ(cfg.at("preprocess_cfg").at("size"), spec.image_size);
    EXPECT_EQ(cfg.at("preprocess_cfg").at("mean").size(), 3u);
    EXPECT_FALSE(mc.contains("init_logit_bias"));

    auto b = cm::create_model(spec, 2);
    cio::load_openclip_weights(b, out + "/open_clip_model.safetensors");
    expect_same_state(a, b);
  }
}

TEST(OpenClipImport, TorchSaveStateDictWithModulePrefixAndStateDictEntry) {
  clipper::test::TempDir dir;
  const auto spec = cm::load_model_spec("tiny-rn");
  auto a = cm::create_model(spec, 3);
  c10::impl::GenericDict sd(c10::StringType::get(), c10::TensorType::get());
  for (const auto& [k, v] : a->state_dict()) sd.insert("module." + k, v);
  c10::impl::GenericDict ckpt(c10::StringType::get(), c10::AnyType::get());
  ckpt.insert("epoch", 3);
  ckpt.insert("state_dict", sd);
  write_pickle(dir.file("ckpt.pt"), ckpt);
  auto b = cm::create_model(spec, 4);
  cio::load_openclip_weights(b, dir.file("ckpt.pt"));
  expect_same_state(a, b);

  write_pickle(dir.file("list.pt"), c10::IValue(std::vector<std::int64_t>{1, 2}));
  EXPECT_TRUE(has(error_of([&] { cio::load_openclip_weights(b, dir.file("list.pt")); }),
                  "not a state dict"));
  std::ofstream(dir.file("junk.pt")) << "junk";
  EXPECT_TRUE(
      has(error_of([&] { cio::load_openclip_weights(b, dir.file("junk.pt")); }), "junk.pt"));
}

TEST(OpenClipImport, StrictErrorsListMissingUnexpectedAndMismatched) {
  clipper::test::TempDir dir;
  const auto spec = cm::load_model_spec("tiny-vit");
  auto a = cm::create_model(spec, 0);
  auto sd = cio::model_state_dict(*a);
  cio::TensorList damaged;
  for (const auto& [k, v] : sd) {
    if (k == "ln_final.weight") continue;  // missing
    if (k == "visual.proj") {
      damaged.emplace_back(k, at::zeros({10, 10}));  // wrong shape
      continue;
    }
    damaged.emplace_back(k, v);
  }
  damaged.emplace_back("visual.extra", at::zeros({1}));  // unexpected
  cio::save_safetensors(dir.file("d.safetensors"), damaged);
  const auto msg = error_of([&] { cio::load_openclip_weights(a, dir.file("d.safetensors")); });
  EXPECT_TRUE(has(msg, "d.safetensors")) << msg;
  EXPECT_TRUE(has(msg, "missing keys (1): ln_final.weight")) << msg;
  EXPECT_TRUE(has(msg, "unexpected keys (1): visual.extra")) << msg;
  EXPECT_TRUE(has(msg, "visual.proj (file [10, 10], model [192, 128])")) << msg;

  // A [1]-shaped logit_scale is reshaped; a missing logit_bias starts at 0 (OpenCLIP's rules).
  auto siglip_spec = spec;
  siglip_spec.init_logit_bias = -10.0;
  auto s = cm::create_model(siglip_spec, 0);
  cio::TensorList plain;
  for (const auto& [k, v] : sd) plain.emplace_back(k, k == "logit_scale" ? at::full({1}, 1.25) : v);
  cio::load_state_dict(*s, plain, "plain");
  EXPECT_FLOAT_EQ(s->logit_scale.item<float>(), 1.25f);
  EXPECT_FLOAT_EQ(s->logit_bias.item<float>(), 0.0f);
}

TEST(ExportVerb, CheckpointFolderAndBareWeights) {
  clipper::test::TempDir dir;
  const auto spec = cm::load_model_spec("tiny-vit");
  auto a = cm::create_model(spec, 9);
  const auto ckpt = dir.file("step-100");
  cio::save_safetensors(ckpt + "/model.safetensors", cio::model_state_dict(*a));
  dir.write("step-100/config.yaml", "model:\n  name: tiny-vit\n");
  const auto bin = clipper::test::clipper_bin();
  auto r =
      clipper::test::run(bin + " export " + ckpt + " --format openclip --out " + dir.file("out1"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto b = cm::create_model(spec, 10);
  cio::load_openclip_weights(b, dir.file("out1/open_clip_model.safetensors"));
  expect_same_state(a, b);
  EXPECT_TRUE(std::ifstream(dir.file("out1/open_clip_config.json")).good());

  r = clipper::test::run(bin + " export " + ckpt + "/model.safetensors --out " + dir.file("out2"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(has(r.output, "--model")) << r.output;
  r = clipper::test::run(bin + " export " + ckpt + "/model.safetensors --model tiny-vit --out " +
                         dir.file("out2"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = clipper::test::run(bin + " export " + ckpt + " --model tiny-rn --out " + dir.file("out3"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(has(r.output, "missing keys")) << r.output;
  r = clipper::test::run(bin + " export " + ckpt + " --format onnx --out " + dir.file("out4"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

TEST(ModelsVerb, ListsParameterCountsAndFlops) {
  const auto r = clipper::test::run(clipper::test::clipper_bin() + " models");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto line_of = [&](const std::string& name) {
    const auto at = r.output.find("\n" + name + " ");
    if (at == std::string::npos) return std::string();
    return r.output.substr(at + 1, r.output.find('\n', at + 1) - at - 1);
  };
  EXPECT_TRUE(has(line_of("ViT-B-32"), "151.28M")) << r.output;
  EXPECT_TRUE(has(line_of("ViT-B-32"), "14.78")) << r.output;
  EXPECT_TRUE(has(line_of("RN50"), "102.01M")) << r.output;
  EXPECT_TRUE(has(line_of("RN50"), "18.18")) << r.output;
  EXPECT_TRUE(has(line_of("ViT-L-14"), "175.33")) << r.output;
  EXPECT_FALSE(line_of("tiny-vit").empty()) << r.output;
  const auto names = clipper::test::run(clipper::test::clipper_bin() + " models --names");
  EXPECT_TRUE(has(names.output, "tiny-rn\n")) << names.output;
}

// An export records its model: the architecture, the preprocessing and the tokenizer come back
// from open_clip_config.json, so eval and embed need no --model (issue 19.6).
TEST(OpenClipExport, ExportDescribesItsModel) {
  clipper::test::TempDir dir;
  for (const char* name : {"tiny-vit", "tiny-rn", "tiny-naflex"}) {
    auto spec = cm::load_model_spec(name);
    cm::use_siglip_init(spec);
    const auto out = dir.file(name);
    cio::export_openclip(cm::create_model(spec, 1), spec, out);
    const auto d = cio::described_model(cio::resolve_weights(out));
    ASSERT_TRUE(d.has_value()) << name;
    EXPECT_EQ(d->name, name);
    EXPECT_EQ(cio::architecture_difference(spec, *d), "") << name;
    EXPECT_EQ(d->tokenizer, spec.tokenizer);
    EXPECT_EQ(d->mean, spec.mean);
    EXPECT_EQ(d->interpolation, spec.interpolation);
    ASSERT_TRUE(d->init_logit_bias.has_value());
    EXPECT_EQ(*d->init_logit_bias, -10.0);
    EXPECT_EQ(cio::openclip_config_json(*d), cio::openclip_config_json(spec)) << name;
    // NaFlex: the export says the model wants patch sequences under its token budget, with
    // timm's create_transform names (issue 28, item 4).
    EXPECT_EQ(d->max_seq_len, spec.max_seq_len) << name;
    const auto pre = nlohmann::json::parse(cio::openclip_config_json(spec))["preprocess_cfg"];
    EXPECT_EQ(pre.contains("naflex"), spec.naflex_inputs()) << name;
    if (spec.naflex_inputs()) {
      EXPECT_EQ(pre["max_seq_len"], 16);
      EXPECT_EQ(pre["patch_size"], 8);
    }
  }
  const auto diff =
      cio::architecture_difference(cm::load_model_spec("tiny-vit"), cm::load_model_spec("tiny-rn"));
  EXPECT_TRUE(has(diff, "vision_cfg.image_size 32 vs 64")) << diff;
  // A bare weights file, or an export written by another tool, does not say.
  const auto bare = dir.file("bare.safetensors");
  cio::save_safetensors(
      bare, cio::model_state_dict(*cm::create_model(cm::load_model_spec("tiny-vit"), 0)));
  EXPECT_FALSE(cio::described_model(bare).has_value());
  const auto other = dir.file("other");
  cio::export_openclip(cm::create_model(cm::load_model_spec("tiny-vit"), 0),
                       cm::load_model_spec("tiny-vit"), other);
  clipper::core::write_file_atomic(other + "/open_clip_config.json",
                                   "{\"model_cfg\": {\"embed_dim\": 1}}");
  EXPECT_FALSE(cio::described_model(other + "/open_clip_model.safetensors").has_value());
}

// `clipper embed` without --model uses the export's model; a --model that disagrees is an error
// naming both.
TEST(OpenClipExport, EmbedUsesTheModelTheWeightsRecord) {
  clipper::test::TempDir dir;
  const auto spec = cm::load_model_spec("tiny-rn");
  const auto out = dir.file("export");
  cio::export_openclip(cm::create_model(spec, 3), spec, out);
  const auto texts = dir.write("t.txt", "a photo of a cat\na dog\n");
  const std::string base = clipper::test::clipper_bin() + " embed --weights " + out +
                           " --device cpu --texts " + texts + " --out ";
  const auto a = clipper::test::run(base + dir.file("a.npy"));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  EXPECT_TRUE(has(a.output, "model tiny-rn as recorded in")) << a.output;
  const auto b = clipper::test::run(base + dir.file("b.npy") + " --model tiny-rn");
  ASSERT_EQ(b.exit_code, 0) << b.output;
  EXPECT_EQ(clipper::core::read_file(dir.file("a.npy")),
            clipper::core::read_file(dir.file("b.npy")));
  const auto c = clipper::test::run(base + dir.file("c.npy") + " --model tiny-vit");
  EXPECT_EQ(c.exit_code, 1) << c.output;
  EXPECT_TRUE(has(c.output, "model 'tiny-vit'") && has(c.output, "'tiny-rn'") &&
              has(c.output, "vision_cfg.image_size"))
      << c.output;
  EXPECT_EQ(std::count(c.output.begin(), c.output.end(), '\n'), 1) << c.output;
}

// A dist.zero 3 checkpoint keeps its trainable parameters in the ranks' files (flat shards of a
// layout whose buckets cross parameters); reading its model.safetensors as weights (export, eval,
// init_from) assembles them whole, beside the rest, whatever world size saved them. A checkpoint
// without the shapes, or without a rank's files, is refused naming what is missing.
TEST(OpenClipImport, ACheckpointOfShardedParametersIsAssembledAsWeights) {
  clipper::test::TempDir dir;
  const std::vector<std::string> names{"visual.proj", "logit_scale", "text_projection"};
  const std::vector<at::Tensor> params{at::randn({3, 5}), at::full({}, 2.5), at::randn({4, 3})};
  const auto layout = clipper::dist::make_flat_layout(params, clipper::dist::reverse_order(3),
                                                      6 * 4 / 1e6, /*world_size=*/3);
  ASSERT_GT(layout.buckets.size(), 1u);
  for (int r = 0; r < 3; ++r) {
    std::vector<at::Tensor> shards;
    for (std::size_t k = 0; k < layout.buckets.size(); ++k) {
      auto flat = at::zeros({layout.buckets[k].padded});
      for (std::size_t j = 0; j < layout.buckets[k].params.size(); ++j) {
        const auto& p = params[layout.buckets[k].params[j]];
        flat.narrow(0, layout.buckets[k].offsets[j], p.numel()).copy_(p.reshape({-1}));
      }
      shards.push_back(flat.narrow(0, r * layout.shard_numel(k), layout.shard_numel(k)).clone());
    }
    auto f = clipper::optim::to_flat_shards(layout, r, names, shards, "param");
    cio::TensorList tensors;
    for (auto& [n, t] : f.tensors) tensors.emplace_back("params/" + n, t);
    const std::string stem = dir.file("rank_0000" + std::to_string(r));
    cio::save_safetensors(stem + ".safetensors", tensors);
    std::ofstream(stem + ".json") << nlohmann::json{{"params", f.json}}.dump();
  }
  cio::save_safetensors(dir.file("model.safetensors"), {{"attn_mask", at::ones({2, 2})}});
  std::ofstream(dir.file("model.json"))
      << R"({"sharded_parameters": ["visual.proj", "logit_scale", "text_projection"],)"
      << R"( "sharded_shapes": [[3, 5], [], [4, 3]]})";
  const auto weights = cio::resolve_weights(dir.path().string());
  std::map<std::string, at::Tensor> got;
  for (const auto& [n, t] : cio::read_state_dict(weights)) got[n] = t;
  ASSERT_EQ(got.size(), 4u);
  for (std::size_t i = 0; i < names.size(); ++i)
    EXPECT_TRUE(at::equal(got.at(names[i]), params[i]));
  EXPECT_TRUE(at::equal(got.at("attn_mask"), at::ones({2, 2})));
  // Refusals: no shapes (an older checkpoint), a rank's files missing.
  std::ofstream(dir.file("model.json")) << R"({"sharded_parameters": ["visual.proj"]})";
  auto error = error_of([&] { cio::read_state_dict(weights); });
  EXPECT_TRUE(has(error, "without their shapes")) << error;
  std::ofstream(dir.file("model.json"))
      << R"({"sharded_parameters": ["visual.proj"], "sharded_shapes": [[3, 5]]})";
  std::filesystem::remove(dir.file("rank_00001.safetensors"));
  error = error_of([&] { cio::read_state_dict(weights); });
  EXPECT_TRUE(has(error, "rank_00001.safetensors")) << error;
}
