#pragma once
// SigLIP's pairwise sigmoid loss (Zhai et al. 2023; OpenCLIP SigLipLoss).
//
// For this rank's images I (B x D) and a block of texts T_k from rank k:
//   block(k) = -sum(logsigmoid(labels * (s * I @ T_k^T + b))) / B,
// labels +1 on the diagonal of the own block (k == rank), -1 everywhere else; the loss is the sum
// of the blocks over every rank k. The text blocks reach this rank either in one all-gather
// (loss.siglip_exchange: gather) or one neighbour at a time around the ring (neighbour: W-1 sends
// of B x D, less memory), both carrying gradient back to their rank.
#include <ATen/core/Tensor.h>

#include <memory>

#include "clipper/config/config.hpp"
#include "clipper/loss/contrastive_loss.hpp"

namespace clipper::loss {

class SigLipLoss : public ContrastiveLoss {
 public:
  SigLipLoss(std::shared_ptr<dist::ProcessGroup> pg, const config::LossConfig& cfg);
  at::Tensor forward(const at::Tensor& image_features, const at::Tensor& text_features,
                     const at::Tensor& logit_scale, const at::Tensor& logit_bias) override;
  std::string kind() const override { return "siglip"; }

 private:
  at::Tensor labels(std::int64_t rows, std::int64_t cols, std::int64_t diag_offset,
                    const at::TensorOptions& opts);

  std::shared_ptr<dist::ProcessGroup> pg_;
  config::LossConfig cfg_;
  at::Tensor cached_labels_;
  std::int64_t cached_cols_ = -1, cached_offset_ = -1;
};

at::Tensor siglip_loss(const at::Tensor& image_features, const at::Tensor& text_features,
                       const at::Tensor& logit_scale, const at::Tensor& logit_bias,
                       dist::ProcessGroup& pg, const config::LossConfig& cfg);

}  // namespace clipper::loss
