#include "clipper/loss/clip_loss.hpp"

#include <ATen/ATen.h>

#include "chunked_loss.hpp"
#include "clipper/core/error.hpp"
#include "clipper/dist/all_gather.hpp"
#include "clipper/dist/process_group.hpp"
#include "feature_checks.hpp"

namespace clipper::loss {

using detail::check_features;
using detail::upcast;

ClipLoss::ClipLoss(std::shared_ptr<dist::ProcessGroup> pg, const config::LossConfig& cfg)
    : pg_(std::move(pg)), cfg_(cfg) {
  core::require(!cfg_.chunked || cfg_.local_loss,
                "loss.chunked: true needs loss.local_loss: true (the chunked form is the local "
                "loss; local_loss: false builds the whole W*B x W*B matrix on every rank)");
}

at::Tensor ClipLoss::labels(std::int64_t rows, std::int64_t offset, const at::Device& device) {
  if (cfg_.cache_labels && cached_labels_.defined() && cached_labels_.size(0) == rows &&
      cached_offset_ == offset && cached_labels_.device() == device)
    return cached_labels_;
  auto l = at::arange(offset, offset + rows, at::TensorOptions().dtype(at::kLong).device(device));
  if (cfg_.cache_labels) {
    cached_labels_ = l;
    cached_offset_ = offset;
  }
  return l;
}

ClipLoss::Logits ClipLoss::logits(const at::Tensor& img, const at::Tensor& txt,
                                  const at::Tensor& scale, bool no_grad) {
  auto& pg = *pg_;
  const std::int64_t w = pg.size(), r = pg.rank(), b = img.size(0), d = img.size(1);
  const auto s = scale.reshape({});
  if (w == 1) {
    const at::Tensor l = upcast(s * img.matmul(txt.t()));
    return {l, l.t(), labels(b, 0, img.device())};
  }
  // Images and texts travel together: one collective (and one in backward).
  const at::Tensor both = at::cat({img, txt}, 1);
  at::Tensor all;
  if (no_grad) {
    all = dist::all_gather_no_grad(both, pg);
  } else if (cfg_.gather_with_grad) {
    all = dist::all_gather_with_grad(both, pg);
  } else if (cfg_.local_loss) {
    // Gathered without gradient, as OpenCLIP: the local rows carry gradient through the rows
    // of the logits (img, txt below), not through the gathered columns.
    all = dist::all_gather_no_grad(both, pg);
  } else {
    // Gathered without gradient; this rank's own rows are put back with theirs (OpenCLIP does
    // the same without local loss, or no feature would get a gradient).
    const at::Tensor gathered = dist::all_gather_no_grad(both, pg);
    all = at::cat(
        {gathered.narrow(0, 0, r * b), both, gathered.narrow(0, (r + 1) * b, (w - r - 1) * b)}, 0);
  }
  const at::Tensor all_img = all.narrow(1, 0, d), all_txt = all.narrow(1, d, d);
  if (cfg_.local_loss)
    return {upcast(s * img.matmul(all_txt.t())), upcast(s * txt.matmul(all_img.t())),
            labels(b, b * r, img.device())};
  const at::Tensor l = upcast(s * all_img.matmul(all_txt.t()));
  return {l, l.t(), labels(w * b, 0, img.device())};
}

at::Tensor ClipLoss::forward(const at::Tensor& img, const at::Tensor& txt, const at::Tensor& scale,
                             const at::Tensor& /*logit_bias*/) {
  check_features(img, txt, scale, "clip loss");
  // With one process there is a single block: the plain form is the same loss with less memory
  // (the chunked one keeps its recompute buffers).
  if (unequal_batches && pg_->size() > 1) return unequal_forward(img, txt, scale);
  detail::check_equal_batches(img.size(0), *pg_, "clip loss");
  if (cfg_.chunked && pg_->size() > 1)
    return detail::chunked_clip_loss(img, txt, scale, *pg_, cfg_.gather_with_grad);
  const Logits l = logits(img, txt, scale, /*no_grad=*/false);
  return (at::cross_entropy_loss(l.image, l.target) + at::cross_entropy_loss(l.text, l.target)) / 2;
}

at::Tensor ClipLoss::unequal_forward(const at::Tensor& img, const at::Tensor& txt,
                                     const at::Tensor& scale) {
  if (!cfg_.local_loss || cfg_.chunked)
    throw core::InputError(
        "clip loss over unequal batches per rank (NaFlex token budgets) needs loss.local_loss: "
        "true and loss.chunked: false");
  auto& pg = *pg_;
  const std::int64_t w = pg.size(), r = pg.rank(), b = img.size(0), d = img.size(1);
  const at::Tensor both = at::cat({img, txt}, 1);
  std::vector<std::int64_t> counts;
  const at::Tensor all = cfg_.gather_with_grad ? dist::all_gather_rows_with_grad(both, pg, &counts)
                                               : dist::all_gather_rows_no_grad(both, pg, &counts);
  std::int64_t offset = 0, total = 0;
  for (std::int64_t k = 0; k < w; ++k) {
    if (k < r) offset += counts[static_cast<std::size_t>(k)];
    total += counts[static_cast<std::size_t>(k)];
  }
  const auto s = scale.reshape({});
  const at::Tensor target = labels(b, offset, img.device());
  const at::Tensor li = upcast(s * img.matmul(all.narrow(1, d, d).t()));
  const at::Tensor lt = upcast(s * txt.matmul(all.narrow(1, 0, d).t()));
  // The mean over this rank's rows, weighted so that the mean over ranks is the mean over all.
  return (at::cross_entropy_loss(li, target) + at::cross_entropy_loss(lt, target)) / 2 *
         (static_cast<double>(w * b) / static_cast<double>(total));
}

namespace {

// OpenCLIP's DistillClipLoss.dist_loss.
at::Tensor soft_cross_entropy(const at::Tensor& teacher, const at::Tensor& student) {
  return -(teacher.softmax(1) * student.log_softmax(1)).sum(1).mean(0);
}

}  // namespace

DistillTerms ClipLoss::forward_distill(const at::Tensor& img, const at::Tensor& txt,
                                       const at::Tensor& scale, const at::Tensor& t_img,
                                       const at::Tensor& t_txt, const at::Tensor& t_scale) {
  check_features(img, txt, scale, "distill loss (student)");
  check_features(t_img, t_txt, t_scale, "distill loss (teacher)");
  detail::check_equal_batches(img.size(0), *pg_, "distill loss");
  TORCH_CHECK(t_img.size(0) == img.size(0), "distill loss: ", img.size(0), " student rows but ",
              t_img.size(0), " teacher rows");
  const Logits s = logits(img, txt, scale, /*no_grad=*/false);
  const Logits t = logits(t_img.detach(), t_txt.detach(), t_scale.detach(), /*no_grad=*/true);
  const at::Tensor contrastive =
      (at::cross_entropy_loss(s.image, s.target) + at::cross_entropy_loss(s.text, s.target)) / 2;
  const at::Tensor distill =
      (soft_cross_entropy(t.image, s.image) + soft_cross_entropy(t.text, s.text)) / 2;
  return {contrastive, distill};
}

at::Tensor clip_loss(const at::Tensor& image_features, const at::Tensor& text_features,
                     const at::Tensor& logit_scale, dist::ProcessGroup& pg,
                     const config::LossConfig& cfg) {
  config::LossConfig c = cfg;
  c.cache_labels = false;
  ClipLoss loss(std::shared_ptr<dist::ProcessGroup>(std::shared_ptr<void>(), &pg), c);
  return loss.forward(image_features, text_features, logit_scale);
}

}  // namespace clipper::loss
