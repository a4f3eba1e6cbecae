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

at::Tensor ClipLoss::forward(const at::Tensor& img, const at::Tensor& txt, const at::Tensor& scale,
                             const at::Tensor& /*logit_bias*/) {
  check_features(img, txt, scale, "clip loss");
  auto& pg = *pg_;
  const std::int64_t w = pg.size(), r = pg.rank(), b = img.size(0), d = img.size(1);
  // One process has no peers, so its columns are its own rows, with gradient.
  if (cfg_.chunked)
    return detail::chunked_clip_loss(img, txt, scale, pg, cfg_.gather_with_grad || w == 1);
  const auto s = scale.reshape({});
  at::Tensor logits_img, logits_txt, target;
  if (w == 1) {
    logits_img = upcast(s * img.matmul(txt.t()));
    logits_txt = logits_img.t();
    target = labels(b, 0, img.device());
  } else {
    // Images and texts travel together: one collective (and one in backward).
    const at::Tensor both = at::cat({img, txt}, 1);
    at::Tensor all;
    if (cfg_.gather_with_grad) {
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
          {gathered.narrow(0, 0, r * b), both, gathered.narrow(0, (r + 1) * b, (w - r - 1) * b)},
          0);
    }
    const at::Tensor all_img = all.narrow(1, 0, d), all_txt = all.narrow(1, d, d);
    if (cfg_.local_loss) {
      logits_img = upcast(s * img.matmul(all_txt.t()));
      logits_txt = upcast(s * txt.matmul(all_img.t()));
      target = labels(b, b * r, img.device());
    } else {
      logits_img = upcast(s * all_img.matmul(all_txt.t()));
      logits_txt = logits_img.t();
      target = labels(w * b, 0, img.device());
    }
  }
  return (at::cross_entropy_loss(logits_img, target) + at::cross_entropy_loss(logits_txt, target)) /
         2;
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
