#pragma once
// CLIP's symmetric InfoNCE loss over the global batch (OpenCLIP ClipLoss).
//
// loss.local_loss (default): each rank scores its own B rows against all W*B columns:
//   logits_per_image = s * I_local @ T_all^T, logits_per_text = s * T_local @ I_all^T,
//   labels = arange(B) + B * rank, loss = (CE(image logits) + CE(text logits)) / 2.
// Full gather (local_loss false): every rank builds the whole W*B x W*B logit matrix.
// loss.gather_with_grad (default): the gathered features carry gradient back to their rank
//   (dist::all_gather_with_grad), so averaged gradients equal the single-process gradients.
//   Without it (OpenCLIP's default) the gathered features carry no gradient, and the gradients
//   differ from the single-process ones, exactly as OpenCLIP's do: with local loss only the rows
//   of this rank's logits (I_local, T_local) carry gradient; with the full gather this rank's own
//   rows are put back into the gathered features with their gradient.
// loss.cache_labels: the label tensor is built once per (device, size).
// Image and text features travel in one all-gather.
#include <ATen/core/Tensor.h>

#include <memory>

#include "clipper/config/config.hpp"
#include "clipper/loss/contrastive_loss.hpp"

namespace clipper::loss {

// The two terms of OpenCLIP's DistillClipLoss; training minimizes their sum.
struct DistillTerms {
  at::Tensor contrastive;  // the CLIP loss above
  at::Tensor distill;      // the teacher-logit term
};

class ClipLoss : public ContrastiveLoss {
 public:
  ClipLoss(std::shared_ptr<dist::ProcessGroup> pg, const config::LossConfig& cfg);
  at::Tensor forward(const at::Tensor& image_features, const at::Tensor& text_features,
                     const at::Tensor& logit_scale, const at::Tensor& logit_bias = {}) override;
  std::string kind() const override { return "clip"; }

  // OpenCLIP's DistillClipLoss (loss.distill_from): the CLIP loss, and the teacher's logits
  // (its features all-gathered like the student's, without gradient, and scored the same way)
  // against the student's: distill = (H(I) + H(T)) / 2 with
  // H(X) = mean over rows of -sum_j softmax(teacher_X)_j * log_softmax(student_X)_j.
  // loss.chunked does not apply here: both terms use the whole rows of this rank's logits.
  DistillTerms forward_distill(const at::Tensor& image_features, const at::Tensor& text_features,
                               const at::Tensor& logit_scale,
                               const at::Tensor& teacher_image_features,
                               const at::Tensor& teacher_text_features,
                               const at::Tensor& teacher_logit_scale);

 private:
  struct Logits {
    at::Tensor image, text, target;
  };
  // This rank's logits (and labels) as the loss config says; `no_grad` gathers without gradient
  // whatever loss.gather_with_grad says (the teacher's features).
  Logits logits(const at::Tensor& img, const at::Tensor& txt, const at::Tensor& scale,
                bool no_grad);
  // The local loss when ranks hold different numbers of pairs (unequal_batches).
  at::Tensor unequal_forward(const at::Tensor& img, const at::Tensor& txt, const at::Tensor& scale);
  at::Tensor labels(std::int64_t rows, std::int64_t offset, const at::Device& device);

  std::shared_ptr<dist::ProcessGroup> pg_;
  config::LossConfig cfg_;
  at::Tensor cached_labels_;
  std::int64_t cached_offset_ = -1;
};

// One-off call (no label cache); pg is only borrowed.
at::Tensor clip_loss(const at::Tensor& image_features, const at::Tensor& text_features,
                     const at::Tensor& logit_scale, dist::ProcessGroup& pg,
                     const config::LossConfig& cfg);

}  // namespace clipper::loss
