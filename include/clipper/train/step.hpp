#pragma once
// One optimizer step of contrastive training, independent of where batches come from:
// device upload and normalization of uint8 images, forward (bf16 autocast when asked), the
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

// What a step reports. The values below `read` exist only when it is true: they come from one
// host read of figures the device keeps over the steps since the previous read (the "window":
// every step with StepOptions::read_every = 1).
struct StepResult {
  bool read = false;         // the fields below were read back
  bool skipped = false;      // the last step had a non-finite loss or gradient: nothing changed
  double loss = 0.0;         // mean over ranks and over the window's good steps (NaN: none)
  double grad_norm = 0.0;    // global norm before clipping, last step
  double logit_scale = 0.0;  // exp(logit_scale) after the last step
  std::int64_t window_steps = 0, window_skipped = 0;
  double window_loss_sum = 0.0;     // sum of the good steps' losses
  double last_loss = 0.0;           // loss of the last good step (so far)
  std::int64_t nan_in_row = 0;      // bad steps in a row at the window's end (across windows)
  std::int64_t max_nan_in_row = 0;  // longest such run that ended in the window (or goes on)
  // Seconds spent in each phase (host time; CUDA phases are synchronized only when timing is on).
  double forward_s = 0, backward_s = 0, reduce_s = 0, optimizer_s = 0;
};

struct StepOptions {
  bool bf16 = false;          // autocast to bf16 (on the step's device: CUDA or CPU)
  double grad_clip_norm = 0;  // 0: off
  bool time_phases = false;   // synchronize the device between phases to time them
  // Read the loss, NaN counts and norms back to the host every this many steps; in between a
  // step issues no host synchronization at all (the NaN skip is decided on the device).
  std::int64_t read_every = 1;
  // Keep the ResNet tower's 4-D weights (and so its activations) channels-last (NHWC), the
  // layout cuDNN's fastest convolutions use; without it every convolution converts its weight.
  bool channels_last = false;
};

class TrainStep {
 public:
  TrainStep(model::Clip model, std::shared_ptr<dist::ProcessGroup> pg, const config::Config& cfg,
            at::Device device, StepOptions options);
  ~TrainStep();

  // One optimizer step over `micro` (accum_freq micro-batches; one without accumulation). Reads
  // back (result.read) every StepOptions::read_every steps.
  StepResult run(const std::vector<MicroBatch>& micro, double lr);
  // Reads back now (one device synchronization): the window since the last read, then a new one.
  StepResult read_back();
  // The run of bad steps a resumed run continues (train.max_nan_in_row counts across the resume).
  void set_nan_in_row(std::int64_t n);

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
  // Device-side window: indices into window_ (float64).
  enum : std::int64_t {
    kLossSum,
    kSteps,
    kSkipped,
    kInRow,
    kMaxInRow,
    kNorm,
    kScale,
    kLastBad,
    kLastLoss,
    kWindowSize
  };
  at::Tensor window_;
  std::int64_t unread_steps_ = 0;
  // Copies the window into `r` (the host read) and starts a new one.
  void read_window(StepResult& r);
};

}  // namespace clipper::train
