#include "clipper/loss/siglip_loss.hpp"

#include <ATen/ATen.h>

#include "chunked_loss.hpp"
#include "clipper/core/error.hpp"
#include "clipper/dist/all_gather.hpp"
#include "clipper/dist/process_group.hpp"
#include "feature_checks.hpp"

namespace clipper::loss {

using detail::check_features;
using detail::upcast;

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
  if (!unequal_batches) detail::check_equal_batches(img.size(0), pg, "siglip loss");
  // One process: a single block, for which the plain form needs less memory.
  if (cfg_.chunked && pg.size() > 1) return detail::chunked_siglip_loss(img, txt, scale, bias, pg);
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
  if (unequal_batches) {
    if (cfg_.chunked || cfg_.siglip_exchange == config::SiglipExchange::neighbour)
      throw core::InputError(
          "siglip loss over unequal batches per rank (NaFlex token budgets) needs "
          "loss.siglip_exchange: gather and loss.chunked: false");
    std::vector<std::int64_t> counts;
    const auto all = dist::all_gather_rows_with_grad(txt, pg, &counts);
    std::int64_t offset = 0, total = 0;
    for (int k = 0; k < w; ++k) {
      if (k < r) offset += counts[static_cast<std::size_t>(k)];
      total += counts[static_cast<std::size_t>(k)];
    }
    // block() divides by this rank's rows; each rank's share of the sum over all rows is
    // world / total of it.
    return block(all, offset) * (static_cast<double>(w * b) / static_cast<double>(total));
  }
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

}  // namespace clipper::loss
