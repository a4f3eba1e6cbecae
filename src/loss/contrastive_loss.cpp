// ClipLoss, SigLipLoss and make_loss in one translation unit (a LibTorch TU costs 20-40 s to
// build).
#include "clipper/loss/clip_loss.hpp"

#include <ATen/ATen.h>

#include "clipper/dist/all_gather.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/loss/siglip_loss.hpp"

namespace clipper::loss {

namespace {

at::Tensor upcast(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16 ? t.to(at::kFloat) : t;
}

void check_features(const at::Tensor& img, const at::Tensor& txt, const at::Tensor& scale,
                    const char* who) {
  TORCH_CHECK(img.dim() == 2 && txt.dim() == 2, who, ": features must be [B, D], got ", img.sizes(),
              " and ", txt.sizes());
  TORCH_CHECK(img.size(0) == txt.size(0), who, ": ", img.size(0), " image rows but ", txt.size(0),
              " text rows");
  TORCH_CHECK(img.size(1) == txt.size(1), who, ": image dim ", img.size(1), " != text dim ",
              txt.size(1));
  TORCH_CHECK(scale.defined() && scale.numel() == 1, who,
              ": logit_scale must be a one-element tensor");
}

}  // namespace

ClipLoss::ClipLoss(std::shared_ptr<dist::ProcessGroup> pg, const config::LossConfig& cfg)
    : pg_(std::move(pg)), cfg_(cfg) {}

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

// --- SigLIP ----------------------------------------------------------------------------------

SigLipLoss::SigLipLoss(std::shared_ptr<dist::ProcessGroup> pg, const config::LossConfig& cfg)
    : pg_(std::move(pg)), cfg_(cfg) {}

at::Tensor SigLipLoss::labels(std::int64_t rows, std::int64_t cols, std::int64_t diag_offset,
                              const at::TensorOptions& opts) {
  if (cfg_.cache_labels && cached_labels_.defined() && cached_labels_.size(0) == rows &&
      cached_cols_ == cols && cached_offset_ == diag_offset &&
      cached_labels_.device() == opts.device() &&
      cached_labels_.scalar_type() == opts.dtype().toScalarType())
    return cached_labels_;
  auto l = at::full({rows, cols}, -1.0, opts);
  if (diag_offset >= 0) l.narrow(1, diag_offset, rows).diagonal().fill_(1.0);
  if (cfg_.cache_labels) {
    cached_labels_ = l;
    cached_cols_ = cols;
    cached_offset_ = diag_offset;
  }
  return l;
}

at::Tensor SigLipLoss::forward(const at::Tensor& img, const at::Tensor& txt,
                               const at::Tensor& scale, const at::Tensor& bias) {
  check_features(img, txt, scale, "siglip loss");
  TORCH_CHECK(bias.defined() && bias.numel() == 1,
              "siglip loss: logit_bias must be a one-element tensor");
  auto& pg = *pg_;
  const std::int64_t w = pg.size(), r = pg.rank(), b = img.size(0);
  const auto s = scale.reshape({});
  const auto bb = bias.reshape({});
  // -sum(logsigmoid(labels * logits)) / B over one block of texts.
  auto block = [&](const at::Tensor& texts, std::int64_t diag_offset) {
    const at::Tensor logits = upcast(s * img.matmul(texts.t()) + bb);
    const at::Tensor lab = labels(b, texts.size(0), diag_offset, logits.options());
    return -at::log_sigmoid(lab * logits).sum() / static_cast<double>(b);
  };
  if (w == 1) return block(txt, 0);
  if (cfg_.siglip_exchange == config::SiglipExchange::neighbour) {
    at::Tensor loss = block(txt, 0);
    at::Tensor current = txt;
    for (std::int64_t k = 1; k < w; ++k) {
      current = dist::ring_shift_with_grad(current, 1, pg);  // the texts of rank (rank - k)
      loss = loss + block(current, -1);
    }
    return loss;
  }
  return block(dist::all_gather_with_grad(txt, pg), b * r);
}

at::Tensor siglip_loss(const at::Tensor& image_features, const at::Tensor& text_features,
                       const at::Tensor& logit_scale, const at::Tensor& logit_bias,
                       dist::ProcessGroup& pg, const config::LossConfig& cfg) {
  config::LossConfig c = cfg;
  c.cache_labels = false;
  SigLipLoss loss(std::shared_ptr<dist::ProcessGroup>(std::shared_ptr<void>(), &pg), c);
  return loss.forward(image_features, text_features, logit_scale, logit_bias);
}

// --- factory ---------------------------------------------------------------------------------

std::unique_ptr<ContrastiveLoss> make_loss(const config::LossConfig& cfg,
                                           std::shared_ptr<dist::ProcessGroup> pg) {
  if (cfg.kind == config::LossKind::siglip) return std::make_unique<SigLipLoss>(std::move(pg), cfg);
  return std::make_unique<ClipLoss>(std::move(pg), cfg);
}

}  // namespace clipper::loss
