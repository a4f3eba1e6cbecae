#pragma once
// One optimizer step of contrastive training, independent of where batches come from:
// device upload and normalization of uint8 images, forward (bf16 autocast on CUDA), the
// distributed loss, backward, gradient all-reduce, NaN/Inf check, clipping, fused AdamW and the
// logit_scale clamp. Needs only LibTorch: `clipper bench train` drives it with synthetic batches.
//
// Gradient accumulation (accum_freq > 1) is contrastive-correct, as OpenCLIP's --accum-freq: the
// features of every micro-batch are first computed without grad and cached; then each micro-batch
// is recomputed with grad and its loss taken against the whole accumulated batch.
#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "clipper/config/config.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/model/image_normalizer.hpp"
#include "clipper/optim/adamw.hpp"

namespace clipper::dist {
class ProcessGroup;
class GradReducer;
}  // namespace clipper::dist
namespace clipper::loss {
class ContrastiveLoss;
}

namespace clipper::train {

struct MicroBatch {
  at::Tensor images;  // uint8 [B, H, W, 3] (any device) or float [B, 3, H, W] already normalized
  at::Tensor tokens;  // int64 [B, L]
};

struct StepResult {
  bool skipped = false;      // non-finite loss or gradient: nothing was updated
  double loss = 0.0;         // mean over ranks (NaN when skipped)
  double grad_norm = 0.0;    // global norm before clipping
  double logit_scale = 0.0;  // exp(logit_scale) after the step
  // Seconds spent in each phase (host time; CUDA phases are synchronized only when timing is on).
  double forward_s = 0, backward_s = 0, reduce_s = 0, optimizer_s = 0;
};

struct StepOptions {
  bool bf16 = false;          // autocast to bf16 (CUDA only)
  double grad_clip_norm = 0;  // 0: off
  bool time_phases = false;   // synchronize the device between phases to time them
};

class TrainStep {
 public:
  TrainStep(model::Clip model, std::shared_ptr<dist::ProcessGroup> pg, const config::Config& cfg,
            at::Device device, StepOptions options);
  ~TrainStep();

  // One optimizer step over `micro` (accum_freq micro-batches; one without accumulation).
  StepResult run(const std::vector<MicroBatch>& micro, double lr);

  model::Clip& model() { return model_; }
  optim::AdamW& optimizer() { return *optimizer_; }
  // uint8 [B,H,W,3] -> float [B,3,H,W] normalized with the model's mean/std, on the device.
  at::Tensor prepare_images(const at::Tensor& images) const;

 private:
  model::Clip model_;
  std::shared_ptr<dist::ProcessGroup> pg_;
  at::Device device_;
  StepOptions options_;
  std::unique_ptr<optim::AdamW> optimizer_;
  std::unique_ptr<loss::ContrastiveLoss> loss_;
  std::unique_ptr<dist::GradReducer> reducer_;
  std::vector<at::Tensor> params_;
  model::ImageNormalizer normalize_;
};

}  // namespace clipper::train
