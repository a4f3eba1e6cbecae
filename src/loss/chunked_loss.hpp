#pragma once
// The memory-bounded forms of the CLIP local loss and the SigLIP loss (loss.chunked).
//
// Each rank's block of features travels once around the ring (W-1 shifts of B x P); at each hop
// this rank scores its own rows against the visiting block, so only one B x B block of logits
// exists at a time. The forward keeps only per-row statistics (CLIP: the log-sum-exp of every
// row over all blocks; SigLIP: nothing). The backward is a custom autograd function that sends
// the blocks around the ring again, recomputes each block's logits and adds the block's gradient
// to an accumulator that travels with it, so the accumulator arrives back at its owner with the
// gradient every rank's loss sends to its features (one more shift). Loss memory per rank is
// O(B x B + B x D), whatever the world size; the values and gradients are those of the
// unchunked forms (local loss with gather_with_grad, or without it: then no gradient flows
// through the visiting blocks, as OpenCLIP's gather without gradient).
//
// Computed in float32 (float64 for float64 features), outside autocast, so that the backward's
// recomputed logits are bit-identical to the forward's.
#include <ATen/core/Tensor.h>

namespace clipper::dist {
class ProcessGroup;
}

namespace clipper::loss::detail {

// CLIP local loss of this rank: (CE over rows of s I T_all^T + CE over rows of s T I_all^T) / 2.
// columns_with_grad: the peers' (and this rank's own) columns carry gradient (gather_with_grad).
at::Tensor chunked_clip_loss(const at::Tensor& img, const at::Tensor& txt, const at::Tensor& scale,
                             dist::ProcessGroup& pg, bool columns_with_grad);

// SigLIP loss of this rank: sum over ranks k of -sum(logsigmoid(labels * (s I T_k^T + b))) / B.
at::Tensor chunked_siglip_loss(const at::Tensor& img, const at::Tensor& txt,
                               const at::Tensor& scale, const at::Tensor& bias,
                               dist::ProcessGroup& pg);

}  // namespace clipper::loss::detail
