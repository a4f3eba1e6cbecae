#include "clipper/train/siglip2_objective.hpp"

#include <ATen/ATen.h>

#include "clipper/core/error.hpp"

namespace clipper::train {

bool distillation_active(const Siglip2Options& o, std::int64_t step, std::int64_t total_steps) {
  if (!o.silc && !o.masked) return false;
  return static_cast<double>(step) >= o.start_fraction * static_cast<double>(total_steps);
}

TeacherTargets teacher_targets(model::ClipImpl& model, DistillParts& parts,
                               const at::Tensor& images) {
  core::require(static_cast<bool>(model.visual_vit),
                "SILC and masked prediction need an OpenCLIP ViT image tower");
  at::NoGradGuard no_grad;
  TeacherTargets t;
  auto [pooled, patches] = model.visual->forward_with_tokens(images);
  t.image_scores = parts.heads->image_head(pooled);
  // Per-patch targets only for masked prediction (its mask token exists): a tower with an
  // attentional pooler has no per-patch outputs, and SILC alone runs on it.
  if (parts.heads->mask_token.defined()) t.patch_scores = parts.heads->patch_head(patches);
  return t;
}

namespace {

at::Tensor silc_term(model::ClipImpl& model, DistillParts& parts, const at::Tensor& images,
                     const TeacherTargets& t, const Siglip2Options& o, at::Generator gen) {
  const auto views = make_local_views(images, o.views, gen).images;
  const auto b = images.size(0);
  const auto scores = parts.heads->image_head(model.visual->forward_with_tokens(views).first);
  return loss::silc_loss(scores.view({o.views.views, b, -1}), t.image_scores, parts.image_center,
                         o.temps);
}

at::Tensor masked_term(model::ClipImpl& model, DistillParts& parts, const at::Tensor& images,
                       const TeacherTargets& t, const Siglip2Options& o, at::Generator gen) {
  auto& vit = *model.visual_vit;
  const auto mask = loss::random_patch_mask(images.size(0), vit.grid * vit.grid, o.mask_ratio, gen)
                        .to(images.device());
  const auto scores = parts.heads->patch_head(
      model::masked_patch_tokens(vit, images, mask, parts.heads->mask_token));
  return loss::masked_prediction_loss(scores, t.patch_scores, mask, parts.patch_center, o.temps);
}

}  // namespace

Siglip2Terms student_terms(model::ClipImpl& model, DistillParts& parts, const at::Tensor& images,
                           const at::Tensor& image_tokens, const at::Tensor& captions,
                           const RegionBatch& regions, const TeacherTargets* t,
                           const Siglip2Options& o, at::Generator gen) {
  Siglip2Terms out;
  const auto zero = at::zeros({}, images.options().dtype(at::kFloat));
  out.locca = out.silc = out.masked = zero;
  out.total = zero;
  if (o.locca) {
    const auto tokens =
        image_tokens.defined() ? image_tokens : model.encode_image_tokens(images).second;
    out.locca_parts = locca_decoder_loss(model, tokens, captions, regions, o.locca_options);
    out.locca = out.locca_parts.total;
    out.total = out.total + o.weights.locca * out.locca;
  }
  if (t && o.silc) {
    out.silc = silc_term(model, parts, images, *t, o, gen);
    out.total = out.total + o.weights.silc * out.silc;
  }
  if (t && o.masked) {
    out.masked = masked_term(model, parts, images, *t, o, gen);
    out.total = out.total + o.weights.masked * out.masked;
  }
  return out;
}

TeacherMeans teacher_means(const TeacherTargets& t) {
  at::NoGradGuard no_grad;
  auto mean = [](const at::Tensor& x) {
    return x.reshape({-1, x.size(-1)}).to(at::kFloat).mean(0);
  };
  return {mean(t.image_scores), t.patch_scores.defined() ? mean(t.patch_scores) : at::Tensor()};
}

void update_centers(DistillParts& parts, const TeacherMeans& m, const loss::DistillTemps& temps) {
  at::NoGradGuard no_grad;
  // updated_center of one row: the row is its own mean.
  parts.image_center =
      loss::updated_center(parts.image_center, m.image.unsqueeze(0), temps.center_momentum);
  if (m.patch.defined())
    parts.patch_center =
        loss::updated_center(parts.patch_center, m.patch.unsqueeze(0), temps.center_momentum);
}

}  // namespace clipper::train
