// `clipper export --format hf` without transformers (label unit): the renaming and what is
// refused. tests/io/test_hf_interop.cpp loads the files in transformers itself.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "clipper/io/hf_export.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/model/clip.hpp"
#include "test_util.hpp"

namespace cio = clipper::io;
namespace cm = clipper::model;

TEST(TransformersExport, StateDictHasTransformersNamesAndShapes) {
  const auto spec = cm::load_model_spec("tiny-vit");
  cm::Clip m(spec);
  const auto oc = cio::model_state_dict(*m);
  std::map<std::string, at::Tensor> hf;
  for (const auto& [k, t] : cio::hf_state_dict(oc, spec)) hf[k] = t;
  std::map<std::string, at::Tensor> src(oc.begin(), oc.end());
  // Every in_proj becomes three tensors, nothing else is added or lost.
  const auto blocks = spec.vision_layers + spec.text_layers;
  EXPECT_EQ(hf.size(), oc.size() + 4 * static_cast<std::size_t>(blocks));
  const auto& q = hf.at("vision_model.encoder.layers.1.self_attn.q_proj.weight");
  const auto& v = hf.at("vision_model.encoder.layers.1.self_attn.v_proj.bias");
  const auto& in_w = src.at("visual.transformer.resblocks.1.attn.in_proj_weight");
  const auto& in_b = src.at("visual.transformer.resblocks.1.attn.in_proj_bias");
  const auto w = spec.vision_width;
  EXPECT_TRUE(at::equal(q, in_w.narrow(0, 0, w)));
  EXPECT_TRUE(at::equal(v, in_b.narrow(0, 2 * w, w)));
  EXPECT_TRUE(at::equal(hf.at("visual_projection.weight"), src.at("visual.proj").t()));
  EXPECT_TRUE(at::equal(hf.at("text_projection.weight"), src.at("text_projection").t()));
  EXPECT_TRUE(at::equal(hf.at("vision_model.pre_layrnorm.weight"), src.at("visual.ln_pre.weight")));
  EXPECT_TRUE(at::equal(hf.at("text_model.encoder.layers.2.mlp.fc2.bias"),
                        src.at("transformer.resblocks.2.mlp.c_proj.bias")));
  EXPECT_EQ(hf.at("logit_scale").dim(), 0);
  EXPECT_TRUE(cio::hf_unsupported(spec).empty());
  const auto cfg = cio::hf_config_json(spec);
  EXPECT_NE(cfg.find("\"hidden_act\": \"gelu\""), std::string::npos) << cfg;
  EXPECT_NE(cfg.find("\"eos_token_id\": 2"), std::string::npos) << cfg;  // argmax pooling
}

// transformers' CLIP has ViT towers only, pools at the end-of-text token and has no logit bias.
TEST(TransformersExport, RefusesWhatTransformersClipCannotExpress) {
  EXPECT_NE(cio::hf_unsupported(cm::load_model_spec("RN50")).find("ModifiedResNet"),
            std::string::npos);
  auto s = cm::load_model_spec("tiny-vit");
  s.text_pool = cm::TextPool::first;
  EXPECT_NE(cio::hf_unsupported(s).find("text_cfg.pool_type 'first'"), std::string::npos);
  s = cm::load_model_spec("tiny-vit");
  cm::use_siglip_init(s);
  EXPECT_NE(cio::hf_unsupported(s).find("logit_bias"), std::string::npos);
  s = cm::load_model_spec("tiny-vit");
  s.tokenizer = "sentencepiece:/x.model";
  EXPECT_NE(cio::hf_unsupported(s).find("tokenizer 'sentencepiece:/x.model'"), std::string::npos);

  // Through the verb: exit 1, the reason, and nothing written.
  clipper::test::TempDir dir;
  const auto rn = cm::load_model_spec("tiny-rn");
  cm::Clip m(rn);
  cio::save_safetensors(dir.file("w.safetensors"), cio::model_state_dict(*m));
  const auto r =
      clipper::test::run(clipper::test::clipper_bin() + " export " + dir.file("w.safetensors") +
                         " --model tiny-rn --format hf --out " + dir.file("hf"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("cannot be exported for transformers' CLIPModel"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("ModifiedResNet"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("hf/config.json")));
}
