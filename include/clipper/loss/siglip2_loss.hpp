#pragma once
// The terms SigLIP 2 (Tschannen et al. 2025, arXiv 2502.14786) adds to the sigmoid loss, each a
// function of tensors (the trainer builds the inputs; docs/training.md has the recipe):
//
// LocCa (arXiv 2403.19596): a decoder reads the un-pooled image tokens and predicts, by token
// cross-entropy, a caption (every sample), the box of a phrase ("referring expression", ARef)
// and the phrase of a box ("grounded captioning", GCap) on samples with regions. A sequence is
// [prefix, target]; only the target's tokens are predicted (locca_labels). In parallel prediction
// (CapPa, arXiv 2306.07915) the target's inputs are mask tokens and the decoder's self-attention
// is not causal, so every target token is predicted from the image and the prefix alone
// (parallel_inputs).
//
// SILC (arXiv 2310.13355) local-to-global self-distillation and TIPS masked prediction
// (arXiv 2410.16512): DINO's cross-entropy between a student's softmax(s / t_s) and an EMA
// teacher's centred, sharpened softmax((t - c) / t_t), the teacher carrying no gradient. SILC
// matches the student's local views to the teacher's global view (image-level features); masked
// prediction matches the student's features at its masked patches to the teacher's features at
// the same patches (the teacher sees the unmasked image), "defined identically to the first term
// but applied to per-patch features" (SigLIP 2, sec. 2.3). Both run through projection heads the
// trainer holds; these functions take the head outputs ([..., K] "prototype" scores).
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace clipper::loss {

// The label positions no loss is taken at (torch's cross_entropy default ignore_index).
inline constexpr std::int64_t kIgnoreLabel = -100;

// SigLIP 2's weights (sec. 2.2-2.3): the decoder loss weighted like the sigmoid loss (1); the
// local-to-global consistency 1 and masked prediction 0.25, both times a model-size factor
// (0.25 B, 0.5 L, 1 So400m, 0.5 g in the paper) the caller folds in.
struct Siglip2Weights {
  double locca = 1.0;
  double silc = 1.0;
  double masked = 0.25;
};

// --- LocCa -------------------------------------------------------------------------------------

// Next-token labels of a [prefix, target] batch: tokens [B, L] int64, target_start [B] int64
// (the position of the target's first token; 1 for a caption after the start token) ->
// labels [B, L - 1], labels[i, t] = tokens[i, t + 1] where t + 1 >= target_start[i] and that
// token is not pad_id, kIgnoreLabel elsewhere (the logits at t come from tokens[:, :t + 1]).
at::Tensor locca_labels(const at::Tensor& tokens, const at::Tensor& target_start,
                        std::int64_t pad_id);

// Parallel prediction's decoder inputs: tokens [B, L] with every position >= target_start[i]
// (padding included) replaced by mask_id; the prefix stays.
at::Tensor parallel_inputs(const at::Tensor& tokens, const at::Tensor& target_start,
                           std::int64_t mask_id);

// The mean token cross-entropy over the labels that are not kIgnoreLabel: logits [B, L, V]
// (computed in float32), labels [B, L]. No such label (an empty batch included): 0, with a
// zero gradient, not NaN.
at::Tensor decoder_token_loss(const at::Tensor& logits, const at::Tensor& labels);

// Each task's logits and labels; aref/gcap hold the rows of the samples that have regions
// (0 rows when none has, or undefined tensors).
struct LoccaInputs {
  at::Tensor caption_logits, caption_labels;
  at::Tensor aref_logits, aref_labels;
  at::Tensor gcap_logits, gcap_labels;
};
struct LoccaTaskWeights {
  double caption = 1.0, aref = 1.0, gcap = 1.0;
};
struct LoccaLoss {
  at::Tensor total, caption, aref, gcap;  // aref/gcap: 0 when no sample has regions
  std::int64_t region_samples = 0;
};
// total = caption * w.caption + aref * w.aref + gcap * w.gcap, each the mean over its task's
// target tokens (decoder_token_loss).
LoccaLoss locca_loss(const LoccaInputs& in, const LoccaTaskWeights& w = {});

// Whether step `step` uses parallel prediction: a hash of (seed, step) below share, the same
// on every rank and after a resume.
bool parallel_prediction_step(std::uint64_t seed, std::int64_t step, double share);

// --- SILC self-distillation and masked prediction ------------------------------------------------

// DINO's temperatures and centre momentum: student 0.1, teacher 0.04 (DINO warms it up from
// 0.04 to 0.07; clipper keeps it fixed; SILC's schedule not checked), centre momentum 0.9.
struct DistillTemps {
  double student = 0.1;
  double teacher = 0.04;
  double center_momentum = 0.9;
};

// Per row: -sum_k softmax((teacher - center) / t_t)_k * log_softmax(student / t_s)_k, rows
// [..., K]; the teacher is detached. Returns [...] (no reduction).
at::Tensor distill_ce(const at::Tensor& student, const at::Tensor& teacher,
                      const at::Tensor& center, const DistillTemps& temps);

// SILC: student_local [V, B, K] (V local views of each sample), teacher_global [B, K] (the
// teacher's global view) -> the mean of distill_ce over the V x B pairs.
at::Tensor silc_loss(const at::Tensor& student_local, const at::Tensor& teacher_global,
                     const at::Tensor& center, const DistillTemps& temps);

// Masked prediction: student [B, N, K] (the student's patch outputs with the masked patches'
// inputs replaced by the mask token), teacher [B, N, K] (unmasked), mask [B, N] bool (true:
// masked) -> per sample the mean of distill_ce over its masked patches, then the mean over the
// samples with at least one masked patch (iBOT's normalisation). No masked patch: 0.
at::Tensor masked_prediction_loss(const at::Tensor& student, const at::Tensor& teacher,
                                  const at::Tensor& mask, const at::Tensor& center,
                                  const DistillTemps& temps);

// DINO's centre update: m * center + (1 - m) * the mean of the teacher's rows ([..., K] -> [K]);
// no gradient. (On several ranks the caller averages the row means across ranks first.)
at::Tensor updated_center(const at::Tensor& center, const at::Tensor& teacher, double momentum);

// Exactly round(ratio * n) masked patches per sample, chosen uniformly by `gen`: [b, n] bool.
at::Tensor random_patch_mask(std::int64_t b, std::int64_t n, double ratio, at::Generator gen);

}  // namespace clipper::loss
