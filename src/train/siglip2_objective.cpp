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
  t.image_scores = parts.teacher_image_head(pooled);
  t.patch_scores = parts.teacher_patch_head(patches);
  return t;
}

namespace {

at::Tensor silc_term(model::ClipImpl& model, DistillParts& parts, const at::Tensor& images,
                     const TeacherTargets& t, const Siglip2Options& o, at::Generator gen) {
  const auto views = make_local_views(images, o.views, gen).images;
  const auto b = images.size(0);
  const auto scores = parts.image_head(model.visual->forward_with_tokens(views).first);
  return loss::silc_loss(scores.view({o.views.views, b, -1}), t.image_scores, parts.image_center,
                         o.temps);
}

at::Tensor masked_term(model::ClipImpl& model, DistillParts& parts, const at::Tensor& images,
                       const TeacherTargets& t, const Siglip2Options& o, at::Generator gen) {
  auto& vit = *model.visual_vit;
  const auto mask = loss::random_patch_mask(images.size(0), vit.grid * vit.grid, o.mask_ratio, gen)
                        .to(images.device());
  const auto scores =
      parts.patch_head(model::masked_patch_tokens(vit, images, mask, parts.mask_token));
  return loss::masked_prediction_loss(scores, t.patch_scores, mask, parts.patch_center, o.temps);
}

}  // namespace

Siglip2Terms student_terms(model::ClipImpl& model, DistillParts& parts, const at::Tensor& images,
                           const at::Tensor& captions, const RegionBatch& regions,
                           const TeacherTargets* t, const Siglip2Options& o, at::Generator gen) {
  Siglip2Terms out;
  const auto zero = at::zeros({}, images.options().dtype(at::kFloat));
  out.locca = out.silc = out.masked = zero;
  out.total = zero;
  if (o.locca) {
    const auto tokens = model.encode_image_tokens(images).second;
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

void update_teacher_parts(DistillParts& parts, const TeacherTargets& t, double decay,
                          const loss::DistillTemps& temps) {
  at::NoGradGuard no_grad;
  parts.image_center =
      loss::updated_center(parts.image_center, t.image_scores, temps.center_momentum);
  parts.patch_center =
      loss::updated_center(parts.patch_center, t.patch_scores, temps.center_momentum);
  auto follow = [&](model::DistillHead& teacher, model::DistillHead& student) {
    auto tp = teacher->parameters(), sp = student->parameters();
    for (std::size_t i = 0; i < tp.size(); ++i) tp[i].lerp_(sp[i].detach(), 1.0 - decay);
  };
  follow(parts.teacher_image_head, parts.image_head);
  follow(parts.teacher_patch_head, parts.patch_head);
}

}  // namespace clipper::train
