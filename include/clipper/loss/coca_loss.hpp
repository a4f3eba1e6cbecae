#pragma once
// CoCa's captioning term (open_clip's CoCaLoss): the cross-entropy of the decoder's logits
// against the next tokens, positions whose label is the pad id left out, averaged over the
// others. The full CoCa loss is clip_weight * (the contrastive loss) + caption_weight * this;
// open_clip's defaults (its --coca-*-loss-weight) are 1 and 2.
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace clipper::loss {

// logits: [B, L, V] (any float dtype, computed in fp32); labels: [B, L] int64. A batch whose
// labels are all pad gives NaN, as torch's cross_entropy does.
at::Tensor caption_loss(const at::Tensor& logits, const at::Tensor& labels, std::int64_t pad_id);

}  // namespace clipper::loss
