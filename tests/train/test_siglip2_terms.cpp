// SILC's local views cut from the batch (train::make_local_views), and SILC self-distillation
// and masked prediction composed on a tiny ViT, as a trainer would run
// them: the teacher (a frozen copy, as the EMA is at its start) scores the global view at the
// image level and per patch; the student scores its local views and its masked picture through
// its heads; the weighted sum (the paper's 1 and 0.25) trains the student toward the teacher.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/optim/adam.h>

#include <algorithm>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "clipper/core/error.hpp"
#include "clipper/data/regions.hpp"
#include "clipper/loss/coca_loss.hpp"
#include "clipper/loss/siglip2_loss.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/model/model_spec.hpp"
#include "clipper/model/siglip2.hpp"
#include "clipper/tokenizer/tokenizer.hpp"
#include "clipper/train/ema.hpp"
#include "clipper/train/siglip2_locca.hpp"
#include "clipper/train/siglip2_objective.hpp"
#include "clipper/train/siglip2_views.hpp"

namespace {

namespace cm = clipper::model;
namespace loss = clipper::loss;

TEST(Siglip2Terms, SilcAndMaskedPredictionTrainTheStudentTowardItsTeacher) {
  const auto spec = cm::load_model_spec("tiny-vit");
  auto student = cm::create_model(spec, 1), teacher = cm::create_model(spec, 1);
  for (auto& p : teacher->parameters()) p.requires_grad_(false);
  const std::int64_t width = student->visual_vit->width, k = 24;
  at::manual_seed(5);
  cm::DistillHead s_img(spec.embed_dim, 32, 16, k), s_patch(width, 32, 16, k);
  at::manual_seed(5);
  cm::DistillHead t_img(spec.embed_dim, 32, 16, k), t_patch(width, 32, 16, k);
  for (auto* h : {&t_img, &t_patch})
    for (auto& p : (*h)->parameters()) p.requires_grad_(false);
  auto mask_token = at::zeros({width}).requires_grad_(true);

  std::vector<at::Tensor> params{mask_token};
  for (auto& p : student->visual->parameters()) params.push_back(p);
  for (auto* h : {&s_img, &s_patch})
    for (auto& p : (*h)->parameters()) params.push_back(p);
  torch::optim::Adam opt(params, torch::optim::AdamOptions(2e-3));

  at::manual_seed(7);
  const auto images = at::randn({4, 3, 32, 32});
  // 4 local views per picture, cut from the global view on the device (SILC's scale 0.05-0.4).
  clipper::train::LocalViewOptions views;
  views.views = 4;
  const auto locals =
      clipper::train::make_local_views(images, views, at::make_generator<at::CPUGeneratorImpl>(8))
          .images;
  const auto n = student->visual_vit->grid * student->visual_vit->grid;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  at::set_num_threads(1);        // small tensors: threads only cost on a busy machine
  const loss::Siglip2Weights w;  // the paper's: SILC 1, masked prediction 0.25
  EXPECT_EQ(w.silc, 1.0);
  EXPECT_EQ(w.masked, 0.25);
  const loss::DistillTemps temps;
  // The centres stay at 0 here: moving them moves the teacher's targets (and the loss's entropy
  // part) between steps; updated_center has its own test.
  const at::Tensor c_img = at::zeros({k}), c_patch = at::zeros({k});
  std::vector<double> losses, silc_losses, masked_losses;
  for (int step = 0; step < 10; ++step) {
    at::Tensor t_global, t_patches;
    {
      at::NoGradGuard no_grad;
      t_global = t_img(teacher->encode_image(images, false));
      t_patches = t_patch(teacher->visual->forward_with_tokens(images).second);
    }
    gen.set_current_seed(3);  // the same mask every step: a fixed objective
    const auto mask = loss::random_patch_mask(4, n, 0.5, gen);
    const auto s_local = s_img(student->encode_image(locals, false)).view({4, 4, k});
    const auto s_masked =
        s_patch(cm::masked_patch_tokens(*student->visual_vit, images, mask, mask_token));
    const auto silc = loss::silc_loss(s_local, t_global, c_img, temps);
    const auto masked = loss::masked_prediction_loss(s_masked, t_patches, mask, c_patch, temps);
    const auto total = w.silc * silc + w.masked * masked;
    opt.zero_grad();
    total.backward();
    if (step == 0) {
      EXPECT_GT(mask_token.grad().abs().sum().item<double>(), 0.0);
      EXPECT_GT(student->visual_vit->conv1->weight.grad().abs().sum().item<double>(), 0.0);
      for (const auto& p : teacher->parameters()) EXPECT_FALSE(p.grad().defined());
    }
    opt.step();
    losses.push_back(total.item<double>());
    silc_losses.push_back(silc.item<double>());
    masked_losses.push_back(masked.item<double>());
  }
  std::cout << "SILC " << silc_losses.front() << " -> " << silc_losses.back()
            << ", masked prediction " << masked_losses.front() << " -> " << masked_losses.back()
            << "\n";
  EXPECT_LT(losses.back(), losses.front());
  EXPECT_LT(silc_losses.back(), silc_losses.front());
  EXPECT_LT(masked_losses.back(), 0.75 * masked_losses.front());
}

TEST(Siglip2Views, LocalViewsAreResizedCropsOfEachGlobalView) {
  at::manual_seed(1);
  const std::int64_t b = 3;
  const auto images = at::randn({b, 3, 32, 40});
  clipper::train::LocalViewOptions o;
  o.views = 5;
  o.size = 24;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(9);
  const auto v = clipper::train::make_local_views(images, o, gen);
  ASSERT_EQ(v.images.sizes(), (std::vector<std::int64_t>{5 * b, 3, 24, 24}));
  ASSERT_EQ(v.boxes.sizes(), (std::vector<std::int64_t>{5, b, 4}));
  for (std::int64_t i = 0; i < 5; ++i)
    for (std::int64_t j = 0; j < b; ++j) {
      const auto x = v.boxes[i][j][0].item<std::int64_t>(),
                 y = v.boxes[i][j][1].item<std::int64_t>();
      const auto w = v.boxes[i][j][2].item<std::int64_t>(),
                 h = v.boxes[i][j][3].item<std::int64_t>();
      ASSERT_TRUE(x >= 0 && y >= 0 && w > 0 && h > 0 && x + w <= 40 && y + h <= 32);
      const double share = static_cast<double>(w * h) / (32.0 * 40.0);
      EXPECT_GT(share, 0.03);  // scale 0.05-0.4, less the rounding of the sides
      EXPECT_LT(share, 0.45);
      const auto want = at::upsample_bilinear2d(
          images.narrow(0, j, 1).narrow(2, y, h).narrow(3, x, w), {24, 24}, false);
      EXPECT_TRUE(at::allclose(v.images.narrow(0, i * b + j, 1), want));
    }
  // View-major rows, whatever the crop: picture j filled with j gives rows of j.
  const auto flat = at::arange(b, at::TensorOptions().dtype(at::kFloat))
                        .view({b, 1, 1, 1})
                        .expand({b, 3, 32, 40});
  const auto rows = clipper::train::make_local_views(flat, o, gen).images;
  for (std::int64_t r = 0; r < 5 * b; ++r) {
    EXPECT_NEAR(rows[r].max().item<double>(), static_cast<double>(r % b), 1e-5);
    EXPECT_NEAR(rows[r].min().item<double>(), static_cast<double>(r % b), 1e-5);
  }
  // The same seed, the same boxes.
  auto again = at::make_generator<at::CPUGeneratorImpl>(9);
  EXPECT_TRUE(at::equal(clipper::train::make_local_views(images, o, again).boxes, v.boxes));
  o.scale_min = 0.0;
  EXPECT_THROW(clipper::train::make_local_views(images, o, gen), clipper::core::InputError);
}

// One id per space-separated word (start 1, end 2, padding 0), ids below tiny-coca's vocabulary.
class WordTokenizer : public clipper::tokenizer::Tokenizer {
 public:
  void encode(std::string_view text, std::int64_t* out) const override {
    std::vector<std::int64_t> ids{1};
    std::string word;
    for (char c : std::string(text) + " ") {
      if (c != ' ') {
        word += c;
      } else if (!word.empty()) {
        ids.push_back(10 + static_cast<std::int64_t>(std::hash<std::string>{}(word) % 4000));
        word.clear();
      }
    }
    ids.push_back(2);
    ids.resize(16, 0);
    std::copy(ids.begin(), ids.end(), out);
  }
  std::int64_t context_length() const override { return 16; }
  std::int64_t vocab_size() const override { return 4010; }
};

at::Tensor stack_rows(const std::vector<std::vector<std::int64_t>>& rows) {
  std::vector<at::Tensor> t;
  for (const auto& r : rows) t.push_back(at::tensor(r, at::TensorOptions().dtype(at::kLong)));
  return at::stack(t);
}

TEST(Siglip2Locca, DecoderLossComposesTheTasksAndLearnsTheBoxes) {
  at::set_num_threads(1);
  auto model = clipper::model::create_model(cm::load_model_spec("tiny-coca"), 2);
  const WordTokenizer tok;
  at::manual_seed(3);
  const auto images = at::randn({4, 3, 28, 28});
  std::vector<std::vector<std::int64_t>> caps(4, std::vector<std::int64_t>(16));
  const char* names[] = {"a photo of a cat", "a photo of a dog", "two birds", "a red car"};
  for (int i = 0; i < 4; ++i) tok.encode(names[i], caps[i].data());
  const auto captions = stack_rows(caps);
  // Samples 0 and 2 have a region each.
  const std::vector<clipper::data::Region> regions{{0.1, 0.2, 0.5, 0.9, "the cat"},
                                                   {0.5, 0.0, 1.0, 0.4, "a bird"}};
  std::vector<std::vector<std::int64_t>> aref, gcap;
  std::vector<std::int64_t> aref_start, gcap_start;
  for (const auto& r : regions) {
    const auto a =
        clipper::data::region_task_sequence(tok, clipper::data::RegionTask::aref, r, 500);
    const auto g =
        clipper::data::region_task_sequence(tok, clipper::data::RegionTask::gcap, r, 500);
    aref.push_back(a.tokens);
    aref_start.push_back(a.target_start);
    gcap.push_back(g.tokens);
    gcap_start.push_back(g.target_start);
  }
  clipper::train::RegionBatch rb;
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  rb.rows = at::tensor(std::vector<std::int64_t>{0, 2}, i64);
  rb.aref_tokens = stack_rows(aref);
  rb.aref_start = at::tensor(aref_start, i64);
  rb.gcap_tokens = stack_rows(gcap);
  rb.gcap_start = at::tensor(gcap_start, i64);
  clipper::train::LoccaOptions o;
  o.mask_id = 3;

  // The caption term is CoCa's caption loss on CoCa's own forward (causal, labels shifted, pad
  // left out).
  {
    at::NoGradGuard no_grad;
    const auto tokens = model->encode_image_tokens(images).second;
    const auto out = clipper::train::locca_decoder_loss(*model, tokens, captions, rb, o);
    const auto coca = model->forward_coca(images, captions);
    EXPECT_NEAR(out.caption.item<double>(),
                clipper::loss::caption_loss(coca.logits, coca.labels, 0).item<double>(), 1e-5);
    EXPECT_EQ(out.region_samples, 2);
    EXPECT_NEAR(out.total.item<double>(), (out.caption + out.aref + out.gcap).item<double>(), 1e-5);
    o.parallel = true;
    const auto par = clipper::train::locca_decoder_loss(*model, tokens, captions, rb, o);
    EXPECT_GT(std::abs(par.caption.item<double>() - out.caption.item<double>()), 1e-4);
    o.parallel = false;
    // No regions: the caption term alone.
    const auto alone = clipper::train::locca_decoder_loss(*model, tokens, captions, {}, o);
    EXPECT_EQ(alone.region_samples, 0);
    EXPECT_NEAR(alone.total.item<double>(), out.caption.item<double>(), 1e-5);
  }

  // Training on the decoder loss, half the steps parallel: the box predictions improve.
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(2e-3));
  double first_aref = 0, last_aref = 0;
  for (int step = 0; step < 12; ++step) {
    o.parallel = clipper::loss::parallel_prediction_step(1, step, 0.5);
    const auto tokens = model->encode_image_tokens(images).second;
    const auto out = clipper::train::locca_decoder_loss(*model, tokens, captions, rb, o);
    opt.zero_grad();
    out.total.backward();
    opt.step();
    if (step == 0) first_aref = out.aref.item<double>();
    if (!o.parallel) last_aref = out.aref.item<double>();
  }
  std::cout << "ARef loss " << first_aref << " -> " << last_aref << "\n";
  EXPECT_LT(last_aref, 0.7 * first_aref);
}

// A CoCa without an attentional pooler (the decoder reads the patch tokens, as SigLIP 2's does),
// 28 x 28 pictures in 4 x 4 patches.
const char* kTinyLocca = R"(embed_dim: 32
custom_text: true
vision_cfg: {image_size: 28, layers: 2, width: 64, patch_size: 7, head_width: 32,
             output_tokens: true}
text_cfg: {context_length: 16, vocab_size: 49408, width: 64, heads: 2, layers: 2,
           embed_cls: true, output_tokens: true}
multimodal_cfg: {context_length: 16, width: 64, heads: 2, layers: 2}
tokenizer: clip
)";

TEST(Siglip2Objective, TermsStartAtTheirFractionWithTheEmaAsTeacher) {
  at::set_num_threads(1);
  auto model = cm::create_model(cm::parse_model_spec(kTinyLocca, "tiny-locca", "test"), 4);
  at::manual_seed(6);
  cm::Siglip2HeadOptions ho;
  ho.distill = ho.masked = ho.parallel = true;
  ho.hidden = 32;
  ho.bottleneck = 16;
  ho.prototypes = 20;
  clipper::train::DistillParts parts;
  parts.heads = cm::add_siglip2_heads(*model, ho);  // model parameters: the EMA holds them too
  clipper::train::WeightEma ema(*model, {0.9, 0.0});
  parts.image_center = at::zeros({20});
  parts.patch_center = at::zeros({20});
  clipper::train::Siglip2Options o;
  o.start_fraction = 0.5;
  o.views.views = 2;
  o.locca_options.mask_embedding = parts.heads->text_mask;
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(1e-3));
  const auto& mask_token = parts.heads->mask_token;

  at::manual_seed(8);
  const auto images = at::randn({3, 3, 28, 28});
  const WordTokenizer tok;
  std::vector<std::vector<std::int64_t>> caps(3, std::vector<std::int64_t>(16));
  const char* names[] = {"a cat", "a dog", "a bird"};
  for (int i = 0; i < 3; ++i) tok.encode(names[i], caps[i].data());
  const auto captions = stack_rows(caps);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(2);
  const std::int64_t total_steps = 4;
  for (std::int64_t step = 0; step < total_steps; ++step) {
    const bool active = clipper::train::distillation_active(o, step, total_steps);
    EXPECT_EQ(active, step >= 2);
    clipper::train::TeacherTargets targets;
    if (active) {
      const auto live = model->visual_vit->conv1->weight.clone();
      {
        const clipper::train::EmaSwapped teacher(&ema);
        targets = clipper::train::teacher_targets(*model, parts, images);
      }
      EXPECT_TRUE(at::equal(model->visual_vit->conv1->weight, live));  // swapped back exactly
      EXPECT_EQ(targets.patch_scores.sizes(), (std::vector<std::int64_t>{3, 16, 20}));
    }
    o.locca_options.parallel = step % 2 == 1;
    const auto terms = clipper::train::student_terms(*model, parts, images, {}, captions, {},
                                                     active ? &targets : nullptr, o, gen);
    opt.zero_grad();
    terms.total.backward();
    EXPECT_GT(terms.locca.item<double>(), 0.0);
    if (active) {
      EXPECT_GT(terms.silc.item<double>(), 0.0);
      EXPECT_GT(terms.masked.item<double>(), 0.0);
      EXPECT_NEAR(terms.total.item<double>(),
                  (terms.locca + terms.silc + 0.25 * terms.masked).item<double>(), 1e-4);
      EXPECT_GT(mask_token.grad().abs().sum().item<double>(), 0.0);
    } else {
      EXPECT_EQ(terms.silc.item<double>(), 0.0);
      EXPECT_EQ(terms.masked.item<double>(), 0.0);
      EXPECT_FALSE(mask_token.grad().defined() &&
                   mask_token.grad().abs().sum().item<double>() != 0.0);
    }
    opt.step();
    ema.update();
    if (active) {
      clipper::train::update_centers(parts, clipper::train::teacher_means(targets), o.temps);
      EXPECT_GT(parts.patch_center.abs().sum().item<double>(), 0.0);
    }
  }
}

}  // namespace
