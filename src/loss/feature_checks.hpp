#pragma once
// Shared by the CLIP and SigLIP losses: the shape checks of their inputs and the fp32 upcast of
// logits computed in half precision.
#include <ATen/ATen.h>

#include <string>

#include "clipper/dist/process_group.hpp"

namespace clipper::loss::detail {

inline at::Tensor upcast(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16 ? t.to(at::kFloat) : t;
}

inline void check_features(const at::Tensor& img, const at::Tensor& txt, const at::Tensor& scale,
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

// The equal-batch forms gather [B, D] from every rank: ranks with different B would abort inside
// the collective. One 8-byte all-gather of the row counts first; DistError naming them.
inline void check_equal_batches(std::int64_t rows, dist::ProcessGroup& pg, const char* who) {
  // Gloo (CPU) groups only: there an unequal all-gather aborts the process. On CUDA the check
  // would make every step wait on the host for the sizes; NCCL runs rely on the trainer setting
  // unequal_batches wherever batch sizes can differ (and on the collective timeout).
  if (pg.size() == 1 || pg.device().is_cuda()) return;
  const at::Tensor all =
      pg.all_gather(at::full({1}, rows, at::TensorOptions().dtype(at::kLong)), "batch sizes").cpu();
  const auto* n = all.data_ptr<std::int64_t>();
  std::string sizes;
  bool equal = true;
  for (int r = 0; r < pg.size(); ++r) {
    equal = equal && n[r] == n[0];
    sizes += (r ? ", rank " : "rank ") + std::to_string(r) + ": " + std::to_string(n[r]);
  }
  if (!equal)
    throw dist::DistError(
        std::string(who) + ": the ranks hold different batch sizes (" + sizes +
        "); the loss needs equal ones unless unequal_batches is on "
        "(ContrastiveLoss::unequal_batches, switched on by data.naflex_seq_lens)");
}
}  // namespace clipper::loss::detail
