#pragma once
// The contrastive losses behind one interface, so the training loop calls
//
//   auto loss_fn = clipper::loss::make_loss(cfg.loss, pg);
//   at::Tensor loss = loss_fn->forward(image_features, text_features, logit_scale.exp(),
//   logit_bias);
//
// Features are [B, D] per rank, L2-normalized, with the same B on every rank. logit_scale is
// already exponentiated. logit_bias is used by SigLIP only (pass an undefined tensor for CLIP).
//
// The value returned on each rank is that rank's share: the mean over ranks of the returned
// losses equals the loss of one process on the concatenated batch, and after the gradients are
// averaged over ranks (GradReducer: SUM / world size) they equal that single process's gradients.
// Reduced-precision logits are upcast to float32 before the loss.
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

namespace clipper::config {
struct LossConfig;
}
namespace clipper::dist {
class ProcessGroup;
}

namespace clipper::loss {

class ContrastiveLoss {
 public:
  virtual ~ContrastiveLoss() = default;
  virtual at::Tensor forward(const at::Tensor& image_features, const at::Tensor& text_features,
                             const at::Tensor& logit_scale, const at::Tensor& logit_bias) = 0;
  // "clip" or "siglip".
  virtual std::string kind() const = 0;
  // Ranks may hold different numbers of pairs (NaFlex batches by token budget): each forward
  // all-gathers the counts first and pads (dist::all_gather_rows_with_grad); each rank's loss is
  // weighted by world * its rows / all rows, so the mean over ranks is still one process's loss
  // on the concatenated batch. CLIP needs loss.local_loss; neither takes loss.chunked or SigLIP's
  // neighbour exchange (an InputError names them).
  bool unequal_batches = false;
};

// loss.kind = clip | siglip. The group must outlive the loss.
std::unique_ptr<ContrastiveLoss> make_loss(const config::LossConfig& cfg,
                                           std::shared_ptr<dist::ProcessGroup> pg);

}  // namespace clipper::loss
