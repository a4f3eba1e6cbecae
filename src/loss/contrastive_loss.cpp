// make_loss: loss.kind -> the loss object.
#include "clipper/loss/contrastive_loss.hpp"

#include "clipper/loss/clip_loss.hpp"
#include "clipper/loss/siglip_loss.hpp"

namespace clipper::loss {

std::unique_ptr<ContrastiveLoss> make_loss(const config::LossConfig& cfg,
                                           std::shared_ptr<dist::ProcessGroup> pg) {
  if (cfg.kind == config::LossKind::siglip) return std::make_unique<SigLipLoss>(std::move(pg), cfg);
  return std::make_unique<ClipLoss>(std::move(pg), cfg);
}

}  // namespace clipper::loss
