#include "clipper/train/siglip2_step.hpp"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <tuple>

#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/train/ema.hpp"

namespace clipper::train {
namespace {

void refuse(bool bad, const std::string& what) {
  if (bad) throw core::InputError(what);
}

// The terms that read the un-pooled patch tokens.
std::string patch_terms(const config::Siglip2Config& c) {
  if (c.locca && c.masked) return "loss.siglip2.locca and loss.siglip2.masked read";
  return c.locca ? "loss.siglip2.locca reads" : "loss.siglip2.masked reads";
}

std::string distill_terms(const config::Siglip2Config& c) {
  if (c.silc && c.masked) return "loss.siglip2.silc and loss.siglip2.masked";
  return c.silc ? "loss.siglip2.silc" : "loss.siglip2.masked";
}

}  // namespace

void check_siglip2(const config::Config& cfg, const model::ClipImpl& model) {
  const auto& c = cfg.loss.siglip2;
  if (!c.any()) return;
  const auto& name = model.spec().name;
  refuse(c.locca && !model.is_coca(),
         "loss.siglip2.locca needs a model with a decoder (a multimodal_cfg section, e.g. "
         "tiny-siglip2); model.name '" +
             name + "' has none");
  refuse((c.locca || c.masked) && model.spec().vision_attn_pool,
         patch_terms(c) + " the image tower's un-pooled patch tokens; model.name '" + name +
             "' ends its tower in an attentional pooler (vision_cfg.attentional_pool): use a "
             "tower without it (e.g. tiny-siglip2)");
  refuse(c.distills() && !model.visual_vit,
         distill_terms(c) + ": an OpenCLIP ViT image tower is needed; model.name '" + name +
             "' has another");
  refuse(c.distills() && cfg.train.ema_decay <= 0.0,
         distill_terms(c) +
             ": the teacher is the weight EMA, set train.ema_decay (e.g. 0.999); "
             "it is 0");
  refuse(cfg.train.accum_freq != 1,
         "loss.siglip2 runs one micro-batch per step: train.accum_freq must be 1, got " +
             std::to_string(cfg.train.accum_freq));
  refuse(cfg.dist.zero == 3,
         "loss.siglip2 is not available with dist.zero 3 (the heads and the teacher pass run "
         "outside the sharded units): use dist.zero 0, 1 or 2");
  refuse(!cfg.data.naflex_seq_lens.empty(),
         "loss.siglip2 needs square pictures: data.naflex_seq_lens must be empty");
  refuse(!cfg.loss.distill_model.empty(),
         "loss.siglip2 and loss.distill_model exclude each other (SigLIP 2's teacher is the "
         "weight EMA)");
  refuse(c.masked && c.mask_ratio <= 0.0,
         "loss.siglip2.mask_ratio must be in (0, 1] with loss.siglip2.masked, got 0");
}

model::Siglip2HeadOptions siglip2_head_options(const config::Siglip2Config& c) {
  model::Siglip2HeadOptions o;
  o.distill = c.distills();
  o.masked = c.masked;
  o.parallel = c.locca && c.parallel_share > 0.0;
  o.hidden = c.head_hidden;
  o.bottleneck = c.head_bottleneck;
  o.prototypes = c.head_prototypes;
  return o;
}

Siglip2Options siglip2_options(const config::Siglip2Config& c, const model::ModelSpec& spec) {
  Siglip2Options o;
  o.locca = c.locca;
  o.silc = c.silc;
  o.masked = c.masked;
  o.start_fraction = c.start_fraction;
  o.mask_ratio = c.mask_ratio;
  o.weights = {c.locca_weight, c.silc_weight, c.masked_weight};
  o.views.views = c.local_views;
  o.locca_options.pad_id = spec.text_pad_id;
  return o;
}

Siglip2Step::Siglip2Step(const config::Siglip2Config& cfg, model::ClipImpl& model,
                         std::uint64_t seed)
    : cfg_(cfg), options_(siglip2_options(cfg, model.spec())), seed_(seed) {
  const auto children = model.named_children();
  const auto* child = children.find("siglip2");
  core::require(child != nullptr, "Siglip2Step: the model has no SigLIP 2 heads");
  parts_.heads = model::Siglip2Heads(std::dynamic_pointer_cast<model::Siglip2HeadsImpl>(*child));
  options_.locca_options.mask_embedding = parts_.heads->text_mask;
  if (!cfg_.distills()) return;
  const auto opts = model.logit_scale.options().dtype(at::kFloat);
  parts_.image_center = at::zeros({cfg_.head_prototypes}, opts);
  parts_.patch_center = at::zeros({cfg_.head_prototypes}, opts);
}

void Siglip2Step::set_progress(std::int64_t step, std::int64_t total_steps) {
  step_ = step;
  total_steps_ = total_steps;
}

at::Tensor Siglip2Step::loss(model::ClipImpl& model, WeightEma* ema, const at::Tensor& images,
                             const at::Tensor& tokens, const data::RegionBatch& regions,
                             const Contrastive& contrastive) {
  const bool distill = distillation_active(options_, step_, total_steps_);
  TeacherTargets targets;
  if (distill) {  // before the student's forward: the swap writes the weights in place
    core::require(ema != nullptr, "SILC and masked prediction need the weight EMA");
    const EmaSwapped teacher(ema);
    targets = teacher_targets(model, parts_, images);
  }
  model::ClipOutput out;
  at::Tensor image_tokens;
  if (cfg_.locca) {
    std::tie(out.image_features, image_tokens) = model.encode_image_tokens(images);
    out.text_features = model.encode_text(tokens);
    out.logit_scale = model.logit_scale.exp();
    if (model.logit_bias.defined()) out.logit_bias = model.logit_bias;
  } else {
    out = model.forward(images, tokens);
  }
  options_.locca_options.parallel =
      cfg_.parallel_share > 0.0 &&
      loss::parallel_prediction_step(seed_, step_, cfg_.parallel_share);
  // The views and masks of this step: the same after a resume.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed_ * 0x9E3779B97F4A7C15ull +
                                                      static_cast<std::uint64_t>(step_) + 1);
  const auto terms = student_terms(model, parts_, images, image_tokens, tokens, regions,
                                   distill ? &targets : nullptr, options_, gen);
  pending_ = distill ? targets : TeacherTargets{};
  record(terms, regions, distill);
  return contrastive(out) + terms.total;
}

void Siglip2Step::record(const Siglip2Terms& terms, const data::RegionBatch& regions,
                         bool distilled) {
  auto add = [](Sum& s, const at::Tensor& v) {
    const auto d = v.detach().to(at::kFloat);
    s.value = s.value.defined() ? s.value + d : d;
    ++s.count;
  };
  if (cfg_.locca) {
    add(locca_, terms.locca);
    without_regions_ += regions.without_regions;
    no_room_ += regions.no_room;
    region_samples_ += terms.locca_parts.region_samples;
  }
  if (distilled && cfg_.silc) add(silc_, terms.silc);
  if (distilled && cfg_.masked) add(masked_, terms.masked);
}

void Siglip2Step::after_update(const at::Tensor& bad, dist::ProcessGroup& pg) {
  if (!pending_.image_scores.defined()) return;
  auto means = teacher_means(pending_);
  pending_ = {};
  if (pg.size() > 1) {
    const auto k = means.image.size(0);
    const bool patch = means.patch.defined();
    auto packed = (patch ? at::cat({means.image, means.patch}) : means.image).to(pg.device());
    pg.all_reduce(packed, dist::ReduceOp::sum, "SigLIP 2 centres");
    packed = packed.to(means.image.device()).div(static_cast<double>(pg.size()));
    means = {packed.narrow(0, 0, k), patch ? packed.narrow(0, k, k) : at::Tensor()};
  }
  const auto image = parts_.image_center, patch = parts_.patch_center;
  update_centers(parts_, means, options_.temps);
  const auto skip = bad.to(image.device());
  parts_.image_center = at::where(skip, image, parts_.image_center);
  parts_.patch_center = at::where(skip, patch, parts_.patch_center);
}

Scalars Siglip2Step::take_scalars() {
  Scalars s;
  auto mean = [&s](const char* name, Sum& x) {
    if (x.count > 0) s.emplace_back(name, x.value.item<double>() / static_cast<double>(x.count));
    x = {};
  };
  mean("train/loss_locca", locca_);
  mean("train/loss_silc", silc_);
  mean("train/loss_masked", masked_);
  if (cfg_.locca) {
    s.emplace_back("train/locca_without_regions", static_cast<double>(without_regions_));
    s.emplace_back("train/locca_region_samples", static_cast<double>(region_samples_));
    s.emplace_back("train/locca_no_room", static_cast<double>(no_room_));
  }
  without_regions_ = region_samples_ = no_room_ = 0;
  return s;
}

std::vector<std::pair<std::string, at::Tensor>> Siglip2Step::state() const {
  if (!parts_.image_center.defined()) return {};
  return {{"image_center", parts_.image_center}, {"patch_center", parts_.patch_center}};
}

void Siglip2Step::load_state(const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                             const std::string& where) {
  if (!parts_.image_center.defined()) return;
  if (tensors.empty()) {
    CLIPPER_WARN("checkpoint '" << where
                                << "' holds no SigLIP 2 centres (siglip2.safetensors): they "
                                   "start again at 0");
    return;
  }
  for (const auto& [name, t] : tensors) {
    at::Tensor* dst = name == "image_center"   ? &parts_.image_center
                      : name == "patch_center" ? &parts_.patch_center
                                               : nullptr;
    if (!dst || dst->sizes() != t.sizes())
      throw core::InputError("checkpoint '" + where + "': siglip2.safetensors' '" + name +
                             "' is not a centre of " + std::to_string(dst ? dst->size(0) : 0) +
                             " prototypes (loss.siglip2.head_prototypes)");
    *dst = t.to(dst->device(), at::kFloat).clone();
  }
}

}  // namespace clipper::train
