// The patch probe (clipper probe-patches, docs/evaluation.md "Patch probe"): patch labels from
// regions by the patch-centre rule, the head's figures on features whose answer is known, and
// the patch features of a loader's pictures, in the loader's order.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "../data/fixtures.hpp"
#include "clipper/core/error.hpp"
#include "clipper/data/loader.hpp"
#include "clipper/eval/patch_probe.hpp"
#include "clipper/model/image_normalizer.hpp"
#include "clipper/model/vision.hpp"
#include "test_util.hpp"

using namespace clipper;

TEST(PatchProbe, EachPatchTakesTheRegionHoldingItsCentre) {
  // 4 x 4 patches, centres at 0.125, 0.375, 0.625, 0.875 each way.
  const std::vector<std::string> classes{"a", "b"};
  const std::vector<std::vector<data::Region>> regions{
      {{0.25, 0.0, 0.75, 0.5, "b"},      // columns 1, 2 of rows 0, 1
       {0.5, 0.0, 1.0, 0.25, "a"},       // columns 2, 3 of row 0, listed last: on top
       {0.0, 0.9, 0.1, 1.0, "a"}},       // holds no centre
      {{0.0, 0.625, 0.125, 0.875, "a"}}  // [x0, x1): holds no centre (0.125 is outside)
  };
  const auto y = eval::patch_labels(regions, {"p0", "p1"}, 4, 4, classes);
  ASSERT_EQ(y.sizes(), (std::vector<std::int64_t>{2, 16}));
  const std::vector<std::int64_t> want0{2, 1, 0, 0,  //
                                        2, 1, 1, 2,  //
                                        2, 2, 2, 2,  //
                                        2, 2, 2, 2};
  EXPECT_TRUE(at::equal(y[0], at::tensor(want0, at::kLong))) << y[0].reshape({4, 4});
  EXPECT_TRUE(at::equal(y[1], at::full({16}, 2, at::kLong))) << y[1].reshape({4, 4});
  // A 2 x 3 grid: rows and columns apart (centres y 0.25, 0.75; x 1/6, 1/2, 5/6).
  const auto z = eval::patch_labels({{{0.4, 0.5, 0.6, 1.0, "b"}}}, {"q"}, 2, 3, classes);
  EXPECT_TRUE(at::equal(z[0], at::tensor(std::vector<std::int64_t>{2, 2, 2, 2, 1, 2}, at::kLong)))
      << z;
  try {
    eval::patch_labels({{}, {{0, 0, 1, 1, "zebra"}}}, {"p0", "p1"}, 4, 4, classes);
    FAIL() << "expected an error";
  } catch (const core::InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("'p1'"), std::string::npos) << what;
    EXPECT_NE(what.find("'zebra'"), std::string::npos) << what;
  }
}

namespace {
// n patches of `classes` classes, about equally many each (seeded).
at::Tensor some_labels(std::int64_t n, std::int64_t classes, std::uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return at::randint(classes, {n}, gen, at::kLong);
}
}  // namespace

TEST(PatchProbe, FeaturesThatEncodeTheLabelScoreOneRandomOnesChance) {
  at::manual_seed(0);
  const std::int64_t C = 4, D = 8;
  const auto ytrain = some_labels(2000, C, 1), ytest = some_labels(1000, C, 2);
  auto encode = [&](const at::Tensor& y) {  // one-hot of the label, scaled, plus a little noise
    return at::one_hot(y, D).to(at::kFloat) * 3 + 0.1 * at::randn({y.size(0), D});
  };
  eval::LinearProbeOptions o;
  o.epochs = 5;
  o.batch_size = 128;
  o.lr = 0.05;
  const auto good = eval::patch_probe(encode(ytrain), ytrain, encode(ytest), ytest, C, o);
  EXPECT_DOUBLE_EQ(good.patch_acc, 1.0);
  EXPECT_DOUBLE_EQ(good.patch_mean_per_class_recall, 1.0);
  EXPECT_DOUBLE_EQ(good.patch_mean_iou, 1.0);
  EXPECT_EQ(good.classes, C);
  EXPECT_EQ(good.train_patches, 2000);
  EXPECT_EQ(good.test_patches, 1000);
  EXPECT_NEAR(good.background_share, ytest.eq(C - 1).to(at::kDouble).mean().item<double>(), 1e-12);
  const auto j = good.to_json();
  EXPECT_EQ(j.at("patch_acc"), 1.0);
  EXPECT_EQ(j.at("patch_mean_per_class_recall"), 1.0);
  // Features that know nothing of the labels: chance, 1 / C.
  const auto bad =
      eval::patch_probe(at::randn({2000, D}), ytrain, at::randn({1000, D}), ytest, C, o);
  EXPECT_NEAR(bad.patch_acc, 0.25, 0.06);
  EXPECT_NEAR(bad.patch_mean_per_class_recall, 0.25, 0.06);
  EXPECT_LT(bad.patch_mean_iou, 0.2);
  // IoU counts the false positives the recall does not: everything predicted as class 0 (the
  // features of class 0 everywhere) has recall 1 for it, IoU = its share.
  const auto all0 =
      eval::patch_probe(encode(ytrain), ytrain, encode(at::zeros_like(ytest)), ytest, C, o);
  EXPECT_NEAR(all0.patch_mean_per_class_recall, 0.25, 1e-12);
  EXPECT_NEAR(all0.patch_mean_iou, ytest.eq(0).to(at::kDouble).mean().item<double>() / C, 1e-12);
}

TEST(PatchProbe, PatchFeaturesAreTheViTsPatchTokensInLoaderOrder) {
  at::set_num_threads(1);
  test::TempDir d;
  // tiny-fmnist-vit: 28 x 28 pictures, 4 x 4 patches of 7 pixels, width 128.
  const auto spec = model::load_model_spec("tiny-fmnist-vit");
  auto m = model::create_model(spec, 3);
  data::ShardWriterOptions wo;
  wo.out_dir = d.path().string();
  wo.prefix = "p";
  wo.samples_per_shard = 5;
  data::ShardWriter w(wo);
  for (int i = 0; i < 7; ++i) {
    const std::string key = "k" + std::to_string(i);
    const std::string js =
        R"({"regions": [{"box": [0.1, 0.2, 0.5, 0.6], "phrase": ")" + key + R"("}]})";
    w.write(
        key,
        {{"png", test::encode(test::test_image(28, 28, i), ".png")}, {"txt", "x"}, {"json", js}});
  }
  data::LoaderOptions o;
  o.shards = w.finish().pattern;
  o.batch_size = 3;
  o.image_size = 28;
  o.train = false;
  o.workers = 2;
  o.pin_memory = "off";
  o.regions_key = "json";
  o.resize_mode = spec.resize_mode;
  o.interpolation = spec.interpolation;
  const model::ImageNormalizer prepare(spec, at::kCPU);
  auto tok = std::make_shared<test::ByteTokenizer>(16);
  data::Loader loader(o, tok);
  const auto split = eval::patch_features(*m, loader, prepare, 5);  // 5 of the 7
  ASSERT_EQ(split.features.sizes(), (std::vector<std::int64_t>{5, 16, 128}));
  EXPECT_EQ(split.rows, 4);
  EXPECT_EQ(split.cols, 4);
  ASSERT_EQ(split.keys.size(), 5u);
  ASSERT_EQ(split.regions.size(), 5u);
  // The same pictures, read again, through the tower by hand: its patch tokens after ln_post.
  data::Loader again(o, tok);
  auto b1 = again.next(), b2 = again.next();
  ASSERT_TRUE(b1 && b2);
  at::NoGradGuard no_grad;
  m->eval();
  const auto images = at::cat({b1->images, b2->images.narrow(0, 0, 2)});
  auto x = m->visual_vit->transformer->forward(
      m->visual_vit->ln_pre->forward(m->visual_vit->embed(prepare(images))));
  x = m->visual_vit->ln_post->forward(x).narrow(1, 1, 16);
  EXPECT_TRUE(at::allclose(split.features, x, 1e-5, 1e-5));
  for (std::size_t i = 0; i < 5; ++i) {
    const auto& key = i < 3 ? b1->keys[i] : b2->keys[i - 3];
    EXPECT_EQ(split.keys[i], key);
    ASSERT_EQ(split.regions[i].size(), 1u);
    EXPECT_EQ(split.regions[i][0].phrase, key);  // each picture's regions follow it
  }
  // A ViT that ends in an attentional pooler (CoCa): the transformer's patch tokens before it.
  auto pooled_spec = spec;
  pooled_spec.vision_attn_pool = true;
  pooled_spec.vision_attn_pool_queries = 4;
  pooled_spec.vision_attn_pool_heads = 2;
  auto pooled = model::create_model(pooled_spec, 3);
  pooled->eval();
  data::Loader third(o, tok);
  const auto p = eval::patch_features(*pooled, third, prepare, 5);
  auto& v = *pooled->visual_vit;
  const auto t =
      v.transformer->forward(v.ln_pre->forward(pooled->visual_vit->embed(prepare(images))));
  EXPECT_TRUE(at::allclose(p.features, t.narrow(1, 1, 16), 1e-5, 1e-5));
}
