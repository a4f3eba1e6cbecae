#include "clipper/loss/siglip2_loss.hpp"

#include <ATen/ATen.h>

#include <cmath>
#include <string>

#include "clipper/core/error.hpp"

namespace clipper::loss {

namespace {

void check_starts(const at::Tensor& tokens, const at::Tensor& target_start, const char* what) {
  TORCH_CHECK(
      tokens.dim() == 2 && target_start.dim() == 1 && target_start.size(0) == tokens.size(0), what,
      ": tokens [B, L] and target_start [B] expected, got ", tokens.sizes(), " and ",
      target_start.sizes());
}

// [B, L] positions >= target_start.
at::Tensor target_positions(const at::Tensor& tokens, const at::Tensor& target_start) {
  const auto pos = at::arange(tokens.size(1), tokens.options().dtype(at::kLong)).unsqueeze(0);
  return pos >= target_start.to(tokens.device(), at::kLong).unsqueeze(1);
}

std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

bool has_rows(const at::Tensor& t) {
  return t.defined() && t.numel() > 0;
}

}  // namespace

// --- LocCa -------------------------------------------------------------------------------------

at::Tensor locca_labels(const at::Tensor& tokens, const at::Tensor& target_start,
                        std::int64_t pad_id) {
  check_starts(tokens, target_start, "locca_labels");
  const auto next = tokens.slice(1, 1);
  const auto keep = target_positions(tokens, target_start).slice(1, 1) & (next != pad_id);
  return at::where(keep, next, at::full({}, kIgnoreLabel, next.options()));
}

at::Tensor parallel_inputs(const at::Tensor& tokens, const at::Tensor& target_start,
                           std::int64_t mask_id) {
  check_starts(tokens, target_start, "parallel_inputs");
  return at::where(target_positions(tokens, target_start), at::full({}, mask_id, tokens.options()),
                   tokens);
}

at::Tensor decoder_token_loss(const at::Tensor& logits, const at::Tensor& labels) {
  TORCH_CHECK(logits.dim() == 3 && labels.dim() == 2 && logits.size(0) == labels.size(0) &&
                  logits.size(1) == labels.size(1),
              "decoder_token_loss: logits [B, L, V] and labels [B, L] expected, got ",
              logits.sizes(), " and ", labels.sizes());
  const auto v = logits.size(2);
  const auto flat = labels.reshape({-1});
  const auto per_token = at::cross_entropy_loss(logits.to(at::kFloat).reshape({-1, v}), flat, {},
                                                at::Reduction::None, kIgnoreLabel);
  // Ignored positions are 0 in per_token; the count is clamped so an empty task gives 0.
  const auto count = (flat != kIgnoreLabel).sum().clamp_min(1).to(at::kFloat);
  return per_token.sum() / count;
}

LoccaLoss locca_loss(const LoccaInputs& in, const LoccaTaskWeights& w) {
  LoccaLoss out;
  out.caption = decoder_token_loss(in.caption_logits, in.caption_labels);
  out.total = out.caption * w.caption;
  const auto zero = at::zeros({}, out.caption.options());
  out.aref = has_rows(in.aref_logits) ? decoder_token_loss(in.aref_logits, in.aref_labels) : zero;
  out.gcap = has_rows(in.gcap_logits) ? decoder_token_loss(in.gcap_logits, in.gcap_labels) : zero;
  out.region_samples = has_rows(in.aref_logits)   ? in.aref_logits.size(0)
                       : has_rows(in.gcap_logits) ? in.gcap_logits.size(0)
                                                  : 0;
  if (has_rows(in.aref_logits)) out.total = out.total + out.aref * w.aref;
  if (has_rows(in.gcap_logits)) out.total = out.total + out.gcap * w.gcap;
  return out;
}

bool parallel_prediction_step(std::uint64_t seed, std::int64_t step, double share) {
  if (share <= 0.0) return false;
  if (share >= 1.0) return true;
  const auto h = mix64(seed ^ mix64(static_cast<std::uint64_t>(step)));
  return static_cast<double>(h >> 11) * 0x1.0p-53 < share;
}

// --- SILC self-distillation and masked prediction ------------------------------------------------

at::Tensor distill_ce(const at::Tensor& student, const at::Tensor& teacher,
                      const at::Tensor& center, const DistillTemps& temps) {
  TORCH_CHECK(student.sizes() == teacher.sizes(), "distill_ce: student ", student.sizes(),
              " and teacher ", teacher.sizes(), " differ");
  TORCH_CHECK(center.dim() == 1 && center.size(0) == student.size(-1), "distill_ce: center [",
              student.size(-1), "] expected, got ", center.sizes());
  const auto t =
      at::softmax((teacher.detach().to(at::kFloat) - center.to(at::kFloat)) / temps.teacher, -1);
  const auto log_s = at::log_softmax(student.to(at::kFloat) / temps.student, -1);
  return -(t * log_s).sum(-1);
}

at::Tensor silc_loss(const at::Tensor& student_local, const at::Tensor& teacher_global,
                     const at::Tensor& center, const DistillTemps& temps) {
  TORCH_CHECK(student_local.dim() == 3 && teacher_global.dim() == 2 &&
                  student_local.size(1) == teacher_global.size(0) &&
                  student_local.size(2) == teacher_global.size(1),
              "silc_loss: student_local [V, B, K] and teacher_global [B, K] expected, got ",
              student_local.sizes(), " and ", teacher_global.sizes());
  return distill_ce(student_local, teacher_global.unsqueeze(0).expand_as(student_local), center,
                    temps)
      .mean();
}

at::Tensor masked_prediction_loss(const at::Tensor& student, const at::Tensor& teacher,
                                  const at::Tensor& mask, const at::Tensor& center,
                                  const DistillTemps& temps) {
  TORCH_CHECK(
      student.dim() == 3 && student.sizes() == teacher.sizes() && mask.dim() == 2 &&
          mask.size(0) == student.size(0) && mask.size(1) == student.size(1),
      "masked_prediction_loss: student and teacher [B, N, K] and mask [B, N] expected, got ",
      student.sizes(), ", ", teacher.sizes(), " and ", mask.sizes());
  const auto m = mask.to(at::kFloat);
  const auto per_patch = distill_ce(student, teacher, center, temps) * m;  // [B, N]
  const auto masked = m.sum(1);
  const auto per_sample = per_patch.sum(1) / masked.clamp_min(1.0);
  const auto samples = (masked > 0).sum().clamp_min(1).to(at::kFloat);
  return per_sample.sum() / samples;
}

at::Tensor updated_center(const at::Tensor& center, const at::Tensor& teacher, double momentum) {
  at::NoGradGuard no_grad;
  const auto rows = teacher.detach().to(at::kFloat).reshape({-1, teacher.size(-1)});
  return center.to(at::kFloat) * momentum + rows.mean(0) * (1.0 - momentum);
}

at::Tensor random_patch_mask(std::int64_t b, std::int64_t n, double ratio, at::Generator gen) {
  core::require(ratio >= 0.0 && ratio <= 1.0,
                "the masked-patch ratio must lie in [0, 1], got " + std::to_string(ratio));
  const auto k = static_cast<std::int64_t>(std::lround(ratio * static_cast<double>(n)));
  const auto scores = at::rand({b, n}, gen, at::TensorOptions().dtype(at::kFloat));
  const auto order = scores.argsort(std::int64_t{1});
  const auto rank = order.argsort(std::int64_t{1});  // each patch's place in its row's random order
  return rank < k;
}

}  // namespace clipper::loss
