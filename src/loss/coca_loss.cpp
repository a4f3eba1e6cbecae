#include "clipper/loss/coca_loss.hpp"

#include <ATen/ATen.h>

namespace clipper::loss {

at::Tensor caption_loss(const at::Tensor& logits, const at::Tensor& labels, std::int64_t pad_id) {
  TORCH_CHECK(logits.dim() == 3 && labels.dim() == 2 && logits.size(0) == labels.size(0) &&
                  logits.size(1) == labels.size(1),
              "caption_loss: logits [B, L, V] and labels [B, L] expected, got ", logits.sizes(),
              " and ", labels.sizes());
  const auto v = logits.size(2);
  return at::cross_entropy_loss(logits.to(at::kFloat).reshape({-1, v}), labels.reshape({-1}), {},
                                at::Reduction::Mean, pad_id);
}

}  // namespace clipper::loss
