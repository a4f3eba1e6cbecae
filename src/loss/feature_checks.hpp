#pragma once
// Shared by the CLIP and SigLIP losses: the shape checks of their inputs and the fp32 upcast of
// logits computed in half precision.
#include <ATen/ATen.h>

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
}  // namespace clipper::loss::detail
