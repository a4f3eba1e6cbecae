// Architectures as data: the configs/models files, the search path, errors, FLOP and parameter
// counts against OpenCLIP's published figures.
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>

#include "clipper/core/error.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/model/flops.hpp"
#include "clipper/model/model_spec.hpp"
#include "test_util.hpp"

namespace cm = clipper::model;
using clipper::core::InputError;
using clipper::test::error_of;

namespace {

std::int64_t numel_sum(const cm::Clip& m) {
  std::int64_t n = 0;
  for (const auto& p : m->parameters()) n += p.numel();
  return n;
}

}  // namespace

TEST(ModelSpec, EveryShippedSpecLoads) {
  const auto names = cm::list_model_specs();
  const std::set<std::string> have(names.begin(), names.end());
  for (const char* want :
       {"RN50", "RN101", "RN50x4", "ViT-B-32", "ViT-B-16", "ViT-L-14", "RN50-quickgelu",
        "RN101-quickgelu", "RN50x4-quickgelu", "ViT-B-32-quickgelu", "ViT-B-16-quickgelu",
        "ViT-L-14-quickgelu", "tiny-vit", "tiny-rn"})
    EXPECT_TRUE(have.count(want)) << want;
  for (const auto& n : names) {
    const auto s = cm::load_model_spec(n);
    EXPECT_EQ(s.name, n);
    EXPECT_EQ(s.quick_gelu, n.find("quickgelu") != std::string::npos) << n;
  }
}

TEST(ModelSpec, FieldsOfRN50AndViTB32) {
  const auto rn = cm::load_model_spec("RN50");
  EXPECT_TRUE(rn.is_resnet());
  EXPECT_EQ(rn.vision_resnet_layers, (std::vector<std::int64_t>{3, 4, 6, 3}));
  EXPECT_EQ(rn.embed_dim, 1024);
  EXPECT_EQ(rn.vision_heads(), 32);  // width*32/64
  const auto vit = cm::load_model_spec("ViT-B-32");
  EXPECT_FALSE(vit.is_resnet());
  EXPECT_EQ(vit.patch_size, 32);
  EXPECT_EQ(vit.vision_heads(), 12);
  EXPECT_EQ(vit.context_length, 77);
  EXPECT_EQ(vit.tokenizer, "clip");
  EXPECT_NEAR(vit.init_logit_scale, std::log(1 / 0.07), 1e-12);
  EXPECT_FALSE(vit.init_logit_bias.has_value());
}

TEST(ModelSpec, UnknownNameListsKnownNames) {
  const auto msg = error_of([] { cm::load_model_spec("ViT-B-33"); });
  EXPECT_NE(msg.find("unknown model 'ViT-B-33'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'ViT-B-32'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("tiny-vit"), std::string::npos) << msg;
}

TEST(ModelSpec, ErrorsNameFileAndKey) {
  clipper::test::TempDir dir;
  const auto bad_key = dir.write("m1.yaml",
                                 "embed_dim: 8\nvision_cfg: {image_size: 8, layers: 1, "
                                 "width: 64, patch_size: 4, pach_dropout: 0.1}\n"
                                 "text_cfg: {width: 64, heads: 1, layers: 1}\n");
  auto msg = error_of([&] { cm::load_model_spec(bad_key); });
  EXPECT_NE(msg.find(bad_key), std::string::npos) << msg;
  EXPECT_NE(msg.find("vision_cfg.pach_dropout"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'patch_dropout'"), std::string::npos) << msg;

  const auto bad_patch = dir.write("m2.yaml",
                                   "embed_dim: 8\nvision_cfg: {image_size: 30, layers: 1, "
                                   "width: 64, patch_size: 4}\n"
                                   "text_cfg: {width: 64, heads: 1, layers: 1}\n");
  msg = error_of([&] { cm::load_model_spec(bad_patch); });
  EXPECT_NE(msg.find("multiple of patch_size"), std::string::npos) << msg;

  const auto bad_type = dir.write("m3.yaml", "embed_dim: big\nvision_cfg: {}\ntext_cfg: {}\n");
  msg = error_of([&] { cm::load_model_spec(bad_type); });
  EXPECT_NE(msg.find("'embed_dim'"), std::string::npos) << msg;
}

// model.force_*: OpenCLIP's --force-* flags over the architecture file; an impossible value names
// the key.
TEST(ModelSpec, ForceOverrides) {
  auto s = cm::load_model_spec("tiny-vit");
  s.patch_dropout = 0.5;
  cm::apply_overrides(s, {});
  EXPECT_EQ(s.image_size, 32);
  EXPECT_FALSE(s.quick_gelu);
  EXPECT_EQ(s.patch_dropout, 0.5);
  cm::apply_overrides(s, {64, true, 0.0});  // 0 is an override too
  EXPECT_EQ(s.image_size, 64);
  EXPECT_TRUE(s.quick_gelu);
  EXPECT_EQ(s.patch_dropout, 0.0);
  const auto msg = error_of([&] { cm::apply_overrides(s, {30, false, -1.0}); });
  EXPECT_NE(msg.find("multiple of patch_size"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.force_image_size=30"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] {
              cm::apply_overrides(s, {0, false, 1.0});
            }).find("model.force_patch_dropout"),
            std::string::npos);
}

TEST(ModelSpec, SearchPathFromEnvironment) {
  clipper::test::TempDir dir;
  dir.write("my-model.yaml",
            "embed_dim: 16\nvision_cfg: {image_size: 16, layers: 1, width: 64, patch_size: 8}\n"
            "text_cfg: {context_length: 8, vocab_size: 100, width: 64, heads: 1, layers: 1}\n"
            "init_logit_bias: -10\ninit_logit_scale: 2.302585\n");
  ::setenv("CLIPPER_MODEL_DIRS", ("/nonexistent:" + dir.path().string()).c_str(), 1);
  const auto names = cm::list_model_specs();
  const auto spec = cm::load_model_spec("my-model");
  ::unsetenv("CLIPPER_MODEL_DIRS");
  EXPECT_NE(std::find(names.begin(), names.end(), "my-model"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "ViT-B-32"), names.end());
  EXPECT_EQ(spec.embed_dim, 16);
  ASSERT_TRUE(spec.init_logit_bias.has_value());
  EXPECT_DOUBLE_EQ(*spec.init_logit_bias, -10.0);
  EXPECT_EQ(spec.path, (dir.path() / "my-model.yaml").string());
}

// The words of text_cfg.pool_type, preprocess_cfg.interpolation and resize_mode are parsed once
// into enums; an unknown one names the file, the key and the words allowed.
TEST(ModelSpec, ChoicesAreParsedOnceAndUnknownWordsNamed) {
  const std::string towers =
      "embed_dim: 16\nvision_cfg: {image_size: 16, layers: 1, width: 64, patch_size: 8}\n";
  const std::string text =
      "text_cfg: {context_length: 8, vocab_size: 100, width: 64, heads: 1, "
      "layers: 1";
  const auto s =
      cm::parse_model_spec(towers + text + ", pool_type: last}\n" +
                               "preprocess_cfg: {interpolation: bilinear, resize_mode: longest}\n",
                           "m", "m.yaml");
  EXPECT_EQ(s.text_pool, cm::TextPool::last);
  EXPECT_EQ(s.interpolation, cm::Interpolation::bilinear);
  EXPECT_EQ(s.resize_mode, cm::ResizeMode::longest);
  const auto d = cm::parse_model_spec(towers + text + "}\n", "m", "m.yaml");
  EXPECT_EQ(d.text_pool, cm::TextPool::argmax);
  EXPECT_EQ(d.interpolation, cm::Interpolation::bicubic);
  EXPECT_EQ(d.resize_mode, cm::ResizeMode::shortest);
  auto msg = error_of(
      [&] { cm::parse_model_spec(towers + text + ", pool_type: mean}\n", "m", "m.yaml"); });
  EXPECT_NE(msg.find("m.yaml: 'text_cfg.pool_type' must be argmax, eos, first or last, got 'mean'"),
            std::string::npos)
      << msg;
  msg = error_of([&] {
    cm::parse_model_spec(towers + text + "}\npreprocess_cfg: {interpolation: nearest}\n", "m",
                         "m.yaml");
  });
  EXPECT_NE(msg.find("'preprocess_cfg.interpolation' must be bicubic or bilinear, got 'nearest'"),
            std::string::npos)
      << msg;
  msg = error_of([&] {
    cm::parse_model_spec(towers + text + "}\npreprocess_cfg: {resize_mode: crop}\n", "m", "m.yaml");
  });
  EXPECT_NE(
      msg.find("'preprocess_cfg.resize_mode' must be shortest, longest or squash, got 'crop'"),
      std::string::npos)
      << msg;
}

// SigLIP's keys: the tower inferred from timm_model_name (or a ResNet's list), choices parsed
// once, and the checks a timm trunk and an unprojected text tower need.
TEST(ModelSpec, SiglipKeysParseAndTheirMistakesAreNamed) {
  const std::string vision =
      "embed_dim: 64\nvision_cfg: {timm_model_name: t, image_size: 16, patch_size: 8, width: 64, "
      "layers: 1, head_width: 32";
  const std::string text =
      "text_cfg: {context_length: 8, vocab_size: 100, width: 64, heads: 2, layers: 1, "
      "no_causal_mask: true, pool_type: last, proj_bias: true, norm_eps: 1.0e-6, act: gelu_tanh";
  const auto s = cm::parse_model_spec(vision + ", timm_pool: avg, act: gelu_tanh}\n" + text +
                                          ", tokenizer_clean: canonicalize}\ncustom_text: true\n",
                                      "m", "m.yaml");
  EXPECT_EQ(s.image_tower, cm::ImageTowerKind::timm_vit);
  EXPECT_EQ(s.vision_pool, cm::VisionPool::avg);
  EXPECT_EQ(s.vision_act, cm::Activation::gelu_tanh);
  EXPECT_EQ(s.text_act, cm::Activation::gelu_tanh);
  EXPECT_DOUBLE_EQ(s.text_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(s.vision_norm_eps, 1e-5);  // the default: OpenCLIP's
  EXPECT_TRUE(s.custom_text && s.text_no_causal_mask && s.text_proj_bias && !s.text_proj_none);
  EXPECT_EQ(s.tokenizer_clean, "canonicalize");
  EXPECT_EQ(cm::load_model_spec("RN50").image_tower, cm::ImageTowerKind::resnet);
  EXPECT_EQ(cm::load_model_spec("ViT-B-32").image_tower, cm::ImageTowerKind::vit);

  auto msg = error_of(
      [&] { cm::parse_model_spec(vision + ", act: relu}\n" + text + "}\n", "m", "m.yaml"); });
  EXPECT_NE(msg.find("m.yaml: 'vision_cfg.act' must be gelu, gelu_tanh or quick_gelu, got 'relu'"),
            std::string::npos)
      << msg;
  msg = error_of(
      [&] { cm::parse_model_spec(vision + ", timm_pol: map}\n" + text + "}\n", "m", "m.yaml"); });
  EXPECT_NE(msg.find("unknown key 'vision_cfg.timm_pol'; did you mean 'timm_pool'?"),
            std::string::npos)
      << msg;
  msg = error_of([&] {
    cm::parse_model_spec(
        "embed_dim: 32\n" + vision.substr(vision.find("vision_cfg")) + "}\n" + text + "}\n", "m",
        "m.yaml");
  });
  EXPECT_NE(msg.find("embed_dim must equal vision_cfg.width"), std::string::npos) << msg;
  msg = error_of([&] {
    cm::parse_model_spec(
        "embed_dim: 64\nvision_cfg: {image_size: 16, layers: 1, width: 64, "
        "patch_size: 8}\ntext_cfg: {width: 32, heads: 1, layers: 1, "
        "proj_type: none}\n",
        "m", "m.yaml");
  });
  EXPECT_NE(msg.find("proj_type none needs embed_dim == text_cfg.width"), std::string::npos) << msg;
  msg = error_of([&] {
    cm::parse_model_spec(
        "embed_dim: 64\nvision_cfg: {tower: vit, image_size: 64, width: 64, "
        "layers: [1, 1, 1, 1]}\ntext_cfg: {width: 64, heads: 1, layers: 1}\n",
        "m", "m.yaml");
  });
  EXPECT_NE(msg.find("vision_cfg.layers is a list (a ResNet's) but vision_cfg.tower is vit"),
            std::string::npos)
      << msg;
}

// OpenCLIP's --siglip passes init_logit_scale ln 10 and init_logit_bias -10 as model kwargs,
// which create_model applies over the architecture file: a file with only init_logit_bias (as
// open_clip's ViT-B-16-SigLIP.json) or with other values still starts at ln 10 and -10.
TEST(ModelSpec, SiglipInitOverridesTheFileAsOpenClipsSiglipFlag) {
  const std::string towers =
      "embed_dim: 16\nvision_cfg: {image_size: 16, layers: 1, width: 64, patch_size: 8}\n"
      "text_cfg: {context_length: 8, vocab_size: 100, width: 64, heads: 1, layers: 1}\n";
  for (const std::string init : {"init_logit_bias: -10\n", "init_logit_bias: -5\n",
                                 "init_logit_bias: -5\ninit_logit_scale: 1.0\n", ""}) {
    auto spec = cm::parse_model_spec(towers + init, "bias-only", "test");
    cm::use_siglip_init(spec);
    EXPECT_DOUBLE_EQ(spec.init_logit_scale, std::log(10.0)) << init;
    ASSERT_TRUE(spec.init_logit_bias.has_value()) << init;
    EXPECT_DOUBLE_EQ(*spec.init_logit_bias, -10.0) << init;
  }
  // Without --siglip the file's values hold, and a bias alone leaves CLIP's scale ln(1 / 0.07).
  const auto clip = cm::parse_model_spec(towers + "init_logit_bias: -10\n", "bias-only", "test");
  EXPECT_NEAR(clip.init_logit_scale, std::log(1 / 0.07), 1e-12);
  EXPECT_DOUBLE_EQ(*clip.init_logit_bias, -10.0);
}

// OpenCLIP's model_profile.csv (REFERENCE.md): image and text GFLOPs per sample.
TEST(Flops, WithinOnePercentOfOpenClipProfile) {
  struct Row {
    const char* name;
    double image, text;
  };
  for (const Row& r : {Row{"RN50", 12.22, 5.96}, Row{"ViT-B-32", 8.82, 5.96},
                       Row{"ViT-B-16", 35.13, 5.96}, Row{"ViT-L-14", 162.03, 13.30}}) {
    const auto f = cm::count_forward_flops(cm::load_model_spec(r.name));
    EXPECT_NEAR(f.image / 1e9, r.image, r.image * 0.01) << r.name;
    EXPECT_NEAR(f.text / 1e9, r.text, r.text * 0.01) << r.name;
    EXPECT_NEAR(f.total() / 1e9, r.image + r.text, (r.image + r.text) * 0.01) << r.name;
    EXPECT_DOUBLE_EQ(cm::forward_flops_per_sample(cm::load_model_spec(r.name)), f.total());
  }
}

// What clipper skips of that count: the last blocks' non-pooled tokens (ViT-B-32: 0.586 GFLOPs in
// the 50-token image tower, 0.410 in the 77-token text tower, worked out by hand from the block
// formula) and, for RN50, the attention pool's other queries (0.637) plus the text tower's 0.410.
TEST(Flops, SkippedWorkOfThePooledLastBlocks) {
  const auto vit = cm::count_forward_flops(cm::load_model_spec("ViT-B-32"));
  EXPECT_NEAR(vit.skipped / 1e9, 0.586 + 0.410, 0.002);
  EXPECT_NEAR(vit.executed() / 1e9, 13.78, 0.005);  // what `clipper models` shows as run
  const auto rn = cm::count_forward_flops(cm::load_model_spec("RN50"));
  EXPECT_NEAR(rn.skipped / 1e9, 0.637 + 0.410, 0.003);
}

TEST(Flops, PatchDropoutCountsKeptTokensInTraining) {
  auto s = cm::load_model_spec("ViT-B-16");
  s.patch_dropout = 0.5;
  const auto eval = cm::count_forward_flops(s, false);
  const auto train = cm::count_forward_flops(s, true);
  EXPECT_LT(train.image, 0.6 * eval.image);
  EXPECT_GT(train.image, 0.4 * eval.image);
  EXPECT_DOUBLE_EQ(train.text, eval.text);
}

TEST(Params, MatchOpenClipCounts) {
  const auto vit = cm::count_parameters(cm::load_model_spec("ViT-B-32"));
  EXPECT_NEAR(vit.total() / 1e6, 151.28, 0.005);
  EXPECT_NEAR(vit.image / 1e6, 87.85, 0.005);
  EXPECT_NEAR(vit.text / 1e6, 63.43, 0.005);
  const auto rn = cm::count_parameters(cm::load_model_spec("RN50"));
  EXPECT_NEAR(rn.total() / 1e6, 102.01, 0.005);
  EXPECT_NEAR(rn.image / 1e6, 38.32, 0.005);
  EXPECT_NEAR(rn.text / 1e6, 63.69, 0.005);
}

TEST(Params, CountEqualsBuiltModel) {
  for (const char* name : {"tiny-vit", "tiny-rn", "ViT-B-32", "RN50", "tiny-siglip"}) {
    const auto spec = cm::load_model_spec(name);
    cm::Clip m(spec);
    EXPECT_EQ(cm::parameter_count(spec), numel_sum(m)) << name;
    std::int64_t visual = 0;
    for (const auto& p : m->named_parameters())
      if (p.key().rfind("visual.", 0) == 0) visual += p.value().numel();
    EXPECT_EQ(cm::count_parameters(spec).image, visual) << name;
  }
  auto siglip = cm::load_model_spec("tiny-vit");
  siglip.init_logit_bias = -10.0;
  cm::Clip m(siglip);
  EXPECT_EQ(cm::parameter_count(siglip), numel_sum(m));
  // A timm trunk with the avg pool (fc_norm, no attn_pool) and a text tower without projection.
  auto avg = cm::load_model_spec("tiny-siglip");
  avg.vision_pool = cm::VisionPool::avg;
  avg.text_proj_none = true;
  cm::Clip a(avg);
  EXPECT_EQ(cm::parameter_count(avg), numel_sum(a));
  EXPECT_TRUE(a->named_parameters().contains("visual.trunk.fc_norm.weight"));
  EXPECT_FALSE(a->named_parameters().contains("text.text_projection.weight"));
}

// REFERENCE.md: ViT-B-32 has 302 state-dict keys, RN50 489 (BatchNorm buffers included).
TEST(StateDict, KeyCountsAndNamesOfOpenClip) {
  cm::Clip vit(cm::load_model_spec("ViT-B-32"));
  const auto sd = vit->state_dict();
  EXPECT_EQ(sd.size(), 302u);
  std::map<std::string, std::vector<std::int64_t>> shapes;
  for (const auto& [k, v] : sd) shapes[k] = v.sizes().vec();
  EXPECT_EQ(shapes.at("visual.conv1.weight"), (std::vector<std::int64_t>{768, 3, 32, 32}));
  EXPECT_EQ(shapes.at("visual.positional_embedding"), (std::vector<std::int64_t>{50, 768}));
  EXPECT_EQ(shapes.at("visual.proj"), (std::vector<std::int64_t>{768, 512}));
  EXPECT_EQ(shapes.at("transformer.resblocks.11.attn.in_proj_weight"),
            (std::vector<std::int64_t>{1536, 512}));
  EXPECT_EQ(shapes.at("visual.transformer.resblocks.0.mlp.c_fc.weight"),
            (std::vector<std::int64_t>{3072, 768}));
  EXPECT_EQ(shapes.at("token_embedding.weight"), (std::vector<std::int64_t>{49408, 512}));
  EXPECT_EQ(shapes.at("logit_scale"), std::vector<std::int64_t>{});
  EXPECT_EQ(shapes.at("text_projection"), (std::vector<std::int64_t>{512, 512}));
  EXPECT_TRUE(shapes.count("ln_final.bias"));

  cm::Clip rn(cm::load_model_spec("RN50"));
  const auto rsd = rn->state_dict();
  EXPECT_EQ(rsd.size(), 489u);
  std::map<std::string, at::Tensor> r(rsd.begin(), rsd.end());
  EXPECT_EQ(r.at("visual.conv1.weight").sizes().vec(), (std::vector<std::int64_t>{32, 3, 3, 3}));
  EXPECT_EQ(r.at("visual.conv3.weight").sizes().vec(), (std::vector<std::int64_t>{64, 32, 3, 3}));
  EXPECT_EQ(r.at("visual.attnpool.positional_embedding").sizes().vec(),
            (std::vector<std::int64_t>{50, 2048}));
  EXPECT_EQ(r.at("visual.attnpool.c_proj.weight").sizes().vec(),
            (std::vector<std::int64_t>{1024, 2048}));
  EXPECT_TRUE(r.count("visual.layer1.0.downsample.0.weight"));
  EXPECT_TRUE(r.count("visual.layer4.0.downsample.1.running_var"));
  EXPECT_FALSE(r.count("visual.layer1.1.downsample.0.weight"));
  EXPECT_EQ(r.at("visual.layer2.3.bn3.num_batches_tracked").scalar_type(), at::kLong);
  EXPECT_EQ(r.at("text_projection").sizes().vec(), (std::vector<std::int64_t>{512, 1024}));
}

// CoCa (multimodal_cfg): the keys parse, the parts are built with open_clip's names, the count
// equals the built model's (the attentional pooler with separate and with packed projections,
// coca_base's tower without pooler), and inconsistent sizes are named.
TEST(ModelSpec, CocaKeysCountsAndMistakes) {
  const auto tiny = cm::load_model_spec("tiny-coca");
  EXPECT_TRUE(tiny.coca && tiny.vision_attn_pool && tiny.text_embed_cls);
  EXPECT_EQ(tiny.vision_attn_pool_queries, 9);
  EXPECT_EQ(tiny.text_positions(), 17);
  auto packed = tiny;
  packed.vision_width = 64;  // = embed_dim: nn.MultiheadAttention's packed in_proj_weight
  auto base = cm::load_model_spec("coca_base");
  base.vision_layers = base.text_layers = base.decoder_layers = 1;
  for (const auto& spec : {tiny, packed, base}) {
    cm::Clip m(spec);
    EXPECT_EQ(cm::parameter_count(spec), numel_sum(m)) << spec.name;
    const auto names = m->named_parameters();
    EXPECT_TRUE(names.contains("text.cls_emb"));
    EXPECT_TRUE(names.contains("text_decoder.cross_attn.0.ln_1_kv.weight"));
    EXPECT_TRUE(names.contains("text_decoder.text_projection"));
    EXPECT_EQ(names.contains("visual.attn_pool.query"), spec.vision_attn_pool);
  }
  EXPECT_TRUE(
      cm::Clip(packed)->named_parameters().contains("visual.attn_pool.attn.in_proj_weight"));
  EXPECT_TRUE(cm::Clip(tiny)->named_parameters().contains("visual.attn_pool.attn.k_proj_weight"));

  const std::string head =
      "embed_dim: 64\nvision_cfg: {image_size: 28, layers: 1, width: 96, head_width: 32, "
      "patch_size: 7, "
      "attentional_pool: true, attn_pooler_queries: 4, attn_pooler_heads: 4}\n";
  const std::string text = "text_cfg: {context_length: 8, width: 64, heads: 2, layers: 1";
  auto msg = error_of([&] {
    cm::parse_model_spec(head + text + "}\nmultimodal_cfg: {width: 64, heads: 2, layers: 1}\n", "m",
                         "m.yaml");
  });
  EXPECT_NE(msg.find("needs text_cfg.embed_cls: true"), std::string::npos) << msg;
  msg = error_of([&] {
    cm::parse_model_spec(
        head + text + ", embed_cls: true}\nmultimodal_cfg: {width: 96, heads: 2, layers: 1}\n", "m",
        "m.yaml");
  });
  EXPECT_NE(msg.find("multimodal_cfg.width must equal text_cfg.width"), std::string::npos) << msg;
  msg = error_of([&] {
    cm::parse_model_spec(
        head + text + ", embed_cls: true}\nmultimodal_cfg: {width: 64, mlp_ratio: 2}\n", "m",
        "m.yaml");
  });
  EXPECT_NE(msg.find("'multimodal_cfg.mlp_ratio' must be 4"), std::string::npos) << msg;
  msg = error_of([&] {
    cm::parse_model_spec(head + text + ", embed_cls: true}\nmultimodal_cfg: {widht: 64}\n", "m",
                         "m.yaml");
  });
  EXPECT_NE(msg.find("unknown key 'multimodal_cfg.widht'; did you mean 'width'?"),
            std::string::npos)
      << msg;
}
