// The SigLIP name map for transformers (io/hf_siglip.hpp) without transformers: both directions
// give back every tensor, the shapes transformers has, Siglip2's Linear patch embedding computes
// the conv's output, and what SiglipModel cannot express or a folder that does not fit is an
// error naming it. (Against transformers itself: test_hf_siglip_interop.cpp.)
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/io/hf_export.hpp"
#include "clipper/io/hf_siglip.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/io/safetensors.hpp"
#include "clipper/model/clip.hpp"
#include "test_util.hpp"

namespace cio = clipper::io;
namespace cm = clipper::model;
using clipper::test::error_of;

namespace {

std::map<std::string, at::Tensor> as_map(const cio::TensorList& l) {
  std::map<std::string, at::Tensor> m;
  for (const auto& [k, v] : l) m[k] = v;
  return m;
}

// tiny-siglip with `from` replaced by `to` in its file.
cm::ModelSpec tiny_siglip_with(const std::string& from, const std::string& to) {
  auto text =
      clipper::core::read_file(clipper::test::source_path("configs/models/tiny-siglip.yaml"));
  const auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return cm::parse_model_spec(text, "tiny-siglip-variant", "test");
}

void expect_round_trip(const cm::ModelSpec& spec, cio::HfClass cls) {
  const auto model = cm::create_model(spec, 3);
  const auto oc = cio::model_state_dict(*model);
  const auto hf = cio::hf_siglip_state_dict(oc, spec, cls);
  EXPECT_TRUE(cio::is_hf_siglip_state_dict(hf));
  EXPECT_FALSE(cio::is_hf_siglip_state_dict(oc));
  const auto back = as_map(cio::openclip_from_hf_siglip(hf, spec, "memory/model.safetensors"));
  ASSERT_EQ(back.size(), oc.size());
  for (const auto& [name, t] : oc) {
    ASSERT_TRUE(back.count(name)) << name;
    EXPECT_TRUE(at::equal(back.at(name), t)) << name << " after " << cio::name_of(cls);
  }
}

}  // namespace

TEST(HfSiglipNameMap, ClassByTower) {
  EXPECT_EQ(cio::default_hf_class(cm::load_model_spec("tiny-siglip")), cio::HfClass::siglip);
  EXPECT_EQ(cio::default_hf_class(cm::load_model_spec("tiny-vit")), cio::HfClass::clip);
  EXPECT_EQ(cio::parse_hf_class("Siglip2Model"), cio::HfClass::siglip2);
  EXPECT_FALSE(cio::parse_hf_class("siglip").has_value());
}

TEST(HfSiglipNameMap, BothWaysGiveBackEveryTensor) {
  const auto spec = cm::load_model_spec("tiny-siglip");
  expect_round_trip(spec, cio::HfClass::siglip);
  expect_round_trip(spec, cio::HfClass::siglip2);
  expect_round_trip(tiny_siglip_with("  proj_bias: true\n", "  proj_type: none\n"),
                    cio::HfClass::siglip);
}

// transformers' names and shapes (SiglipModel.state_dict() of the same sizes).
TEST(HfSiglipNameMap, TransformersShapes) {
  const auto spec = cm::load_model_spec("tiny-siglip");
  const auto oc = cio::model_state_dict(*cm::create_model(spec, 3));
  const auto hf = as_map(cio::hf_siglip_state_dict(oc, spec, cio::HfClass::siglip));
  const auto hf2 = as_map(cio::hf_siglip_state_dict(oc, spec, cio::HfClass::siglip2));
  const auto shape = [](const at::Tensor& t) { return cio::shape_text(t.sizes()); };
  EXPECT_EQ(shape(hf.at("logit_scale")), "[1]");
  EXPECT_EQ(shape(hf.at("logit_bias")), "[1]");
  EXPECT_EQ(shape(hf.at("vision_model.embeddings.patch_embedding.weight")), "[64, 3, 8, 8]");
  EXPECT_EQ(shape(hf2.at("vision_model.embeddings.patch_embedding.weight")), "[64, 192]");
  EXPECT_EQ(shape(hf.at("vision_model.embeddings.position_embedding.weight")), "[16, 64]");
  EXPECT_EQ(shape(hf.at("vision_model.head.probe")), "[1, 1, 64]");
  EXPECT_EQ(shape(hf.at("vision_model.head.attention.in_proj_weight")), "[192, 64]");
  EXPECT_EQ(shape(hf.at("vision_model.encoder.layers.1.self_attn.v_proj.weight")), "[64, 64]");
  EXPECT_EQ(shape(hf.at("text_model.encoder.layers.1.self_attn.q_proj.bias")), "[64]");
  EXPECT_EQ(shape(hf.at("text_model.head.weight")), "[64, 64]");
  // 16 per encoder block (2 per tower), 13 embeddings, norms, heads and logits, 11 in the pool.
  EXPECT_EQ(hf.size(), 2u * 2 * 16 + 13 + 11);
  // The in_proj of the pool head is timm's q over kv.
  const auto oc_map = as_map(oc);
  EXPECT_TRUE(at::equal(hf.at("vision_model.head.attention.in_proj_weight"),
                        at::cat({oc_map.at("visual.trunk.attn_pool.q.weight"),
                                 oc_map.at("visual.trunk.attn_pool.kv.weight")})));
}

// Siglip2's patch embedding is a Linear over patches flattened (row, column, channel), as
// Siglip2ImageProcessor lays them out: it computes the conv's output.
TEST(HfSiglipNameMap, Siglip2PatchLinearEqualsTheConv) {
  const auto spec = cm::load_model_spec("tiny-siglip");
  const auto oc = cio::model_state_dict(*cm::create_model(spec, 3));
  const auto hf = as_map(cio::hf_siglip_state_dict(oc, spec, cio::HfClass::siglip2));
  const auto conv_w = as_map(oc).at("visual.trunk.patch_embed.proj.weight");
  at::manual_seed(4);
  const auto patch = at::randn({1, 3, 8, 8});
  const auto by_conv = at::conv2d(patch, conv_w).reshape({-1});
  const auto flat = patch[0].permute({1, 2, 0}).reshape({-1});  // (row, column, channel)
  const auto by_linear = at::matmul(hf.at("vision_model.embeddings.patch_embedding.weight"), flat);
  EXPECT_LE((by_conv - by_linear).abs().max().item<double>(), 1e-5);
}

// NaFlex (issue 28): the tower is Siglip2Model's: a Linear patch embedding over (row, column,
// channel) patches as timm's NaFlexVit, the G x G position table as G*G rows, num_patches G*G
// and the token budget as the processor's max_num_patches; SiglipModel and CLIPModel refuse it.
TEST(HfSiglipNameMap, NaflexTowerIsSiglip2s) {
  const auto spec = cm::load_model_spec("tiny-naflex");
  EXPECT_EQ(cio::default_hf_class(spec), cio::HfClass::siglip2);
  expect_round_trip(spec, cio::HfClass::siglip2);
  const auto oc = as_map(cio::model_state_dict(*cm::create_model(spec, 3)));
  const auto hf = as_map(cio::hf_siglip_state_dict(
      cio::model_state_dict(*cm::create_model(spec, 3)), spec, cio::HfClass::siglip2));
  EXPECT_EQ(cio::shape_text(hf.at("vision_model.embeddings.patch_embedding.weight").sizes()),
            "[64, 192]");
  const auto table = hf.at("vision_model.embeddings.position_embedding.weight");
  EXPECT_EQ(cio::shape_text(table.sizes()), "[16, 64]");
  // Row y * 4 + x is the table's (y, x).
  EXPECT_TRUE(at::equal(table[6], oc.at("visual.trunk.embeds.pos_embed")[0][1][2]));
  const auto config =
      nlohmann::json::parse(cio::hf_siglip_config_json(spec, cio::HfClass::siglip2));
  EXPECT_EQ(config["vision_config"]["num_patches"], 16);
  EXPECT_NE(cio::hf_siglip_unsupported(spec, cio::HfClass::siglip).find("--hf-class Siglip2Model"),
            std::string::npos);
  EXPECT_NE(cio::hf_unsupported(spec).find("--hf-class Siglip2Model"), std::string::npos);
  // The processor of the export: Siglip2's, under the model's token budget (24 here, not the
  // 4 x 4 grid of image_size).
  auto text =
      clipper::core::read_file(clipper::test::source_path("configs/models/tiny-naflex.yaml"));
  const std::string from = "max_seq_len: 16";
  ASSERT_NE(text.find(from), std::string::npos);
  text.replace(text.find(from), from.size(), "max_seq_len: 24");
  const auto budget24 = cm::parse_model_spec(text, "tiny-naflex-24", "test");
  clipper::test::TempDir dir;
  cio::export_hf_siglip(cm::create_model(budget24, 3), budget24, cio::HfClass::siglip2,
                        dir.file("hf"));
  const auto pre =
      nlohmann::json::parse(clipper::core::read_file(dir.file("hf/preprocessor_config.json")));
  EXPECT_EQ(pre["image_processor_type"], "Siglip2ImageProcessor");
  EXPECT_EQ(pre["max_num_patches"], 24);  // preprocess_cfg.max_seq_len
  EXPECT_EQ(pre["patch_size"], 8);
  EXPECT_EQ(pre["resample"], 3);  // bicubic, the model's interpolation
}

TEST(HfSiglipExport, RefusesWhatSiglipCannotExpress) {
  const auto vit = cm::load_model_spec("tiny-vit");
  EXPECT_NE(cio::hf_siglip_unsupported(vit, cio::HfClass::siglip).find("image tower"),
            std::string::npos);
  EXPECT_NE(cio::hf_siglip_unsupported(vit, cio::HfClass::siglip).find("causal"),
            std::string::npos);
  const auto avg = tiny_siglip_with("timm_pool: map", "timm_pool: avg");
  EXPECT_NE(cio::hf_siglip_unsupported(avg, cio::HfClass::siglip2).find("timm_pool 'avg'"),
            std::string::npos);
  const auto causal = tiny_siglip_with("no_causal_mask: true", "no_causal_mask: false");
  EXPECT_NE(cio::hf_siglip_unsupported(causal, cio::HfClass::siglip).find("causal text tower"),
            std::string::npos);
  EXPECT_EQ(cio::hf_siglip_unsupported(cm::load_model_spec("tiny-siglip"), cio::HfClass::siglip2),
            "");
  // SO400M/14 at 384 px: 27 patches of 14 and 6 pixels left over.
  const auto so400m = cm::load_model_spec("ViT-SO400M-14-SigLIP-384");
  EXPECT_EQ(cio::hf_siglip_unsupported(so400m, cio::HfClass::siglip), "");
  EXPECT_NE(cio::hf_siglip_unsupported(so400m, cio::HfClass::siglip2)
                .find("image_size 384 is not a multiple of patch_size 14"),
            std::string::npos);
  const auto msg = error_of([&] { cio::check_hf_siglip_exportable(avg, cio::HfClass::siglip); });
  EXPECT_NE(msg.find("cannot be exported for transformers' SiglipModel"), std::string::npos) << msg;
}

// --hf-class CLIPModel for a timm trunk: refused naming the class that takes it (it was an
// internal error: "the model has no tensor 'visual.class_embedding'").
TEST(HfSiglipExport, ClipModelRefusesATimmTrunk) {
  const auto why = cio::hf_unsupported(cm::load_model_spec("tiny-siglip"));
  EXPECT_NE(why.find("timm's SigLIP trunk"), std::string::npos) << why;
  EXPECT_NE(why.find("--hf-class SiglipModel"), std::string::npos) << why;
}

// The CLI: a model SiglipModel cannot hold is refused, nothing written, exit code non-zero.
TEST(HfSiglipExport, CliRefusesAnOpenClipViT) {
  clipper::test::TempDir dir;
  const auto spec = cm::load_model_spec("tiny-vit");
  cio::save_safetensors(dir.file("w.safetensors"),
                        cio::model_state_dict(*cm::create_model(spec, 1)));
  const auto r = clipper::test::run(
      clipper::test::clipper_bin() + " export " + dir.file("w.safetensors") +
      " --model tiny-vit --format hf --hf-class SiglipModel --out " + dir.file("hf"));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("cannot be exported for transformers' SiglipModel"), std::string::npos)
      << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("hf/model.safetensors")));
}

// A folder's config.json must describe the model's architecture: head counts, activations and
// epsilons do not show in the shapes.
TEST(HfSiglipImport, ConfigBesideMustMatchTheModel) {
  clipper::test::TempDir dir;
  const auto spec = cm::load_model_spec("tiny-siglip");
  auto model = cm::create_model(spec, 3);
  const auto hf =
      cio::hf_siglip_state_dict(cio::model_state_dict(*model), spec, cio::HfClass::siglip);
  cio::save_safetensors(dir.file("model.safetensors"), hf);
  auto cfg = nlohmann::json::parse(cio::hf_siglip_config_json(spec, cio::HfClass::siglip));
  cfg["text_config"]["num_attention_heads"] = 2;
  cfg["vision_config"].erase("hidden_act");  // transformers' default, gelu_pytorch_tanh: the same
  dir.write("config.json", cfg.dump());
  const auto msg =
      error_of([&] { cio::load_openclip_weights(model, dir.file("model.safetensors")); });
  EXPECT_NE(msg.find("text_config.num_attention_heads 2 (the model's 4)"), std::string::npos)
      << msg;
  EXPECT_EQ(msg.find("hidden_act"), std::string::npos) << msg;
  cfg["text_config"]["num_attention_heads"] = 4;
  dir.write("config.json", cfg.dump());
  const auto report = cio::load_openclip_weights(model, dir.file("model.safetensors"));
  EXPECT_EQ(report.tensors, static_cast<std::int64_t>(model->state_dict().size()));
}

TEST(HfSiglipImport, MissingUnexpectedAndUnfitTensorsAreNamed) {
  const auto spec = cm::load_model_spec("tiny-siglip");
  const auto oc = cio::model_state_dict(*cm::create_model(spec, 3));
  auto hf = cio::hf_siglip_state_dict(oc, spec, cio::HfClass::siglip);
  auto broken = hf;
  broken.erase(broken.begin() + 3);
  broken.emplace_back("vision_model.head.extra", at::zeros({1}));
  broken.emplace_back("text_model.embeddings.position_ids", at::zeros({1}));  // old files: ignored
  const auto msg =
      error_of([&] { cio::openclip_from_hf_siglip(broken, spec, "x/model.safetensors"); });
  EXPECT_NE(msg.find("missing keys (1): " + hf[3].first), std::string::npos) << msg;
  EXPECT_NE(msg.find("unexpected keys (1): vision_model.head.extra"), std::string::npos) << msg;
  // A head that is not the identity cannot go into a tower without a projection.
  const auto none = tiny_siglip_with("  proj_bias: true\n", "  proj_type: none\n");
  const auto msg2 =
      error_of([&] { cio::openclip_from_hf_siglip(hf, none, "x/model.safetensors"); });
  EXPECT_NE(msg2.find("text_model.head.weight is not the identity"), std::string::npos) << msg2;
  // Weights of another layout: a CLIP model cannot hold them.
  const auto msg3 = error_of([&] {
    cio::openclip_from_hf_siglip(hf, cm::load_model_spec("tiny-vit"), "x/m.safetensors");
  });
  EXPECT_NE(msg3.find("are transformers' SiglipModel; model 'tiny-vit' cannot hold them"),
            std::string::npos)
      << msg3;
}
