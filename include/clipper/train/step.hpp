#pragma once
// One optimizer step of contrastive training, independent of where batches come from:
//   forward_backward(micro)   device upload, normalization, forward (bf16 autocast when asked),
//                             the distributed loss, backward with the gradient all-reduce
//   reduce_and_check()        the loss and the NaN/Inf check across ranks, on the device
//   apply(lr, health)         clipping, fused AdamW (skipped on the device for a bad step), the
//                             logit_scale clamp, the weight average (ema.hpp) and the device-side
//                             statistics
// How parameters, gradients and optimizer state are spread over the ranks is the stage's
// ParameterSharding (StepConfig::zero, sharding.hpp): the step reads the same for every stage
// (docs/distributed.md).
// Needs only LibTorch: `clipper bench train` drives it with synthetic batches.
//
// Gradient accumulation (accum_freq > 1) is contrastive-correct, as OpenCLIP's --accum-freq: the
// features of every micro-batch are first computed without grad and cached; then each micro-batch
// is recomputed with grad and its loss taken against the whole accumulated batch.
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "clipper/config/config.hpp"
#include "clipper/data/regions.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/model/image_normalizer.hpp"
#include "clipper/optim/adamw.hpp"
#include "clipper/optim/sharded_adamw.hpp"
#include "clipper/train/device_stats.hpp"
#include "clipper/train/ema.hpp"
#include "clipper/train/sharding.hpp"

namespace clipper::dist {
class ProcessGroup;
}  // namespace clipper::dist
namespace clipper::loss {
class ContrastiveLoss;
class ClipLoss;
}  // namespace clipper::loss

namespace clipper::train {

class Siglip2Step;

struct MicroBatch {
  at::Tensor images;  // uint8 [B, H, W, 3] (any device) or float [B, 3, H, W] already normalized
  at::Tensor tokens;  // int64 [B, L]
  at::Tensor grids;   // NaFlex: int64 [B, 2], images are patches [B, N, P*P*3] (data::Batch)
  // SigLIP 2's LocCa: the region task sequences of the samples with regions (the trainer's
  // data::make_region_batch of data::Batch::regions) and the count of those without
  data::RegionBatch regions;
};

// The config sections the step reads.
struct StepConfig {
  config::OptimConfig optim;  // AdamW settings, weight-decay groups, grad_clip_norm
  config::LossConfig loss;
  double bucket_mb = 25.0;  // dist.bucket_mb
  bool overlap_grad_reduce = true;
  int zero = 0;  // dist.zero: 0 replicated, 1, 2, 3 (sharding.hpp)
  config::Prefetch prefetch = config::Prefetch::automatic;  // dist.prefetch (zero 3)
  bool gather_bf16 = false;                                 // dist.gather_bf16 (zero 3)
  EmaOptions ema;  // train.ema_decay, train.ema_warmup_power
  // Ranks may hold different numbers of pairs (data.naflex_seq_lens: token-budget batches): the
  // loss gathers counts first (ContrastiveLoss::unequal_batches).
  bool unequal_batches = false;

  // The step's settings from their sections of a run's config (optim, loss, dist, train's EMA).
  static StepConfig from(const config::Config& cfg);
};

struct StepOptions {
  bool bf16 = false;         // autocast to bf16 (on the step's device: CUDA or CPU)
  bool time_phases = false;  // synchronize the device between phases to time them
  // Read the loss, NaN counts and norms back to the host every this many steps; in between a
  // step issues no host synchronization at all (the NaN skip is decided on the device).
  std::int64_t read_every = 1;
  // Keep the ResNet tower's 4-D weights (and so its activations) channels-last (NHWC), the
  // layout cuDNN's fastest convolutions use; without it every convolution converts its weight.
  bool channels_last = false;
};

// What a step reports: the read-back statistics (device_stats.hpp) when `read` is true, and
// always the seconds spent in each phase (host time; CUDA phases are synchronized only when
// timing is on).
struct StepResult : StatsWindow {
  double forward_s = 0, backward_s = 0, reduce_s = 0, optimizer_s = 0;
};

// The step's health, decided on the device by reduce_and_check (no host read).
struct StepHealth {
  at::Tensor loss;       // mean over ranks
  at::Tensor bad;        // bool: some rank saw a non-finite loss or gradient
  at::Tensor grad_norm;  // global norm before clipping
};

class TrainStep {
 public:
  TrainStep(model::Clip model, std::shared_ptr<dist::ProcessGroup> pg, const StepConfig& cfg,
            at::Device device, StepOptions options);
  ~TrainStep();

  // One optimizer step over `micro` (accum_freq micro-batches; one without accumulation). Reads
  // back (result.read) every StepOptions::read_every steps.
  StepResult run(const std::vector<MicroBatch>& micro, double lr);
  // Reads back now (one device synchronization): the window since the last read, then a new one.
  StepResult read_back();

  // The run of bad steps is the step's state: a resumed run continues it (train.max_nan_in_row
  // counts across the resume). Reading it synchronizes with the device.
  std::int64_t nan_in_row() const { return stats_.nan_in_row(); }
  void set_nan_in_row(std::int64_t n) { stats_.set_nan_in_row(n); }

  model::Clip& model() { return model_; }
  // StepOptions::time_phases from the next step on (`clipper bench train`'s breakdown).
  void set_time_phases(bool on) { options_.time_phases = on; }
  // Distillation: from now on each step also runs `teacher` (frozen, in eval mode, on the step's
  // device) under no grad and the same autocast, and the loss is OpenCLIP's DistillClipLoss
  // (contrastive + distill terms, summed) over the whole accumulated batch. loss.kind clip only.
  void set_teacher(model::Clip teacher);
  // SigLIP 2's terms (loss.siglip2, siglip2_step.hpp): from now on each step adds them to the
  // contrastive loss (one micro-batch per step). Null: off.
  void set_siglip2(std::unique_ptr<Siglip2Step> siglip2);
  Siglip2Step* siglip2() { return siglip2_.get(); }
  // The weight average (StepConfig::ema.decay > 0), updated once per optimizer step; else null.
  // With dist.zero 3 it averages this rank's parameter shards (ema.hpp).
  WeightEma* ema() { return ema_.get(); }
  // Collective with dist.zero 3: runs `fn`, which reads the parameters (an export, unit by unit):
  // full sharding gathers each unit while fn's operations use it, at most two whole at once, and
  // keeps only the shards afterwards; the other stages hold every parameter whole anyway.
  void read_parameters(const std::function<void()>& fn);
  // The whole-parameter optimizer (zero = 0 only).
  optim::AdamW& optimizer();
  int zero() const { return zero_; }
  // The optimizer state in its checkpoint form: this rank's shard of the flat layout, whatever
  // the stage; loading re-shards from shards saved by any world size.
  optim::FlatShards optimizer_shards() const;
  void load_optimizer_shards(const optim::SavedFlatShards& saved);
  // dist.zero 3: this rank's shards of the trainable parameters in the flat-shard form (the
  // checkpoint saves them per rank), and their names; other stages: nothing, and no names.
  std::optional<optim::FlatShards> parameter_shards();
  const std::vector<std::string>& sharded_parameter_names() const { return sharded_names_; }
  // Bytes of optimizer state (moments and step counts) this rank holds.
  std::int64_t optimizer_state_bytes() const;
  // The most bytes of trainable parameters this rank held at once during the last step.
  std::int64_t peak_parameter_bytes() const;
  // That, the bytes held now and the parameter gathers so far (sharding.hpp).
  ShardingCounters sharding_counters() const;
  // uint8 [B,H,W,3] -> float [B,3,H,W] normalized with the model's mean/std, on the device.
  at::Tensor prepare_images(const at::Tensor& images) const;

 private:
  // Backward has run when these return; the value is the (last) loss.
  at::Tensor forward_backward(const std::vector<MicroBatch>& micro, StepResult& r);
  at::Tensor forward_backward_accumulated(const std::vector<MicroBatch>& micro, StepResult& r);
  // The teacher's features of a batch (no grad; the caller's autocast).
  model::ClipOutput teach(const at::Tensor& images, const at::Tensor& tokens,
                          const at::Tensor& grids);
  // The loss of the student's output, with the teacher's when distilling.
  at::Tensor loss_of(const model::ClipOutput& out, const model::ClipOutput* teacher);
  // CoCa: loss.coca_clip_weight * loss_of(out) + loss.coca_caption_weight * the caption term.
  at::Tensor coca_loss_of(const model::ClipOutput& out, const at::Tensor& logits,
                          const at::Tensor& labels);
  StepHealth reduce_and_check(const at::Tensor& loss);
  void apply(double lr, const StepHealth& health);
  void make_sharding(const StepConfig& cfg);
  void make_ema(const EmaOptions& options);
  void sync_for_timing() const;
  // After the update: the logit_scale clamp, the weight average, the statistics.
  void after_update(const StepHealth& health);
  friend class WholeParameters;
  friend class AveragedWeights;
  int whole_depth_ = 0;
  std::vector<std::string> sharded_names_;

  model::Clip model_;
  std::shared_ptr<dist::ProcessGroup> pg_;
  at::Device device_;
  StepOptions options_;
  double grad_clip_norm_;
  int zero_ = 0;
  std::unique_ptr<ParameterSharding> sharding_;
  std::unique_ptr<loss::ContrastiveLoss> loss_;
  config::LossConfig loss_cfg_;
  model::Clip teacher_{nullptr};
  std::unique_ptr<loss::ClipLoss> distill_;
  std::unique_ptr<WeightEma> ema_;
  std::unique_ptr<Siglip2Step> siglip2_;
  std::vector<at::Tensor> params_;  // the trainable ones
  model::ImageNormalizer normalize_;
  DeviceStats stats_;
  std::int64_t unread_steps_ = 0;
};

// Collective (every rank makes one at the same point): for its lifetime every parameter is whole
// on every rank, whatever dist.zero; full sharding gathers them, and afterwards keeps each rank's
// shard of what changed in between. Evaluation, checkpoints and export run inside one; they nest.
class WholeParameters {
 public:
  explicit WholeParameters(TrainStep& step);
  ~WholeParameters();
  WholeParameters(const WholeParameters&) = delete;
  WholeParameters& operator=(const WholeParameters&) = delete;

 private:
  TrainStep& step_;
};

// Collective: the weight average in the model's place for its lifetime (nothing when `on` is
// false or the step keeps none), then the weights back, exactly. With dist.zero 3 it exchanges the
// shards, so it comes before a WholeParameters or read_parameters(), never inside one.
class AveragedWeights {
 public:
  AveragedWeights(TrainStep& step, bool on);
  ~AveragedWeights();
  AveragedWeights(const AveragedWeights&) = delete;
  AveragedWeights& operator=(const AveragedWeights&) = delete;

 private:
  TrainStep& step_;
  bool on_;
};

}  // namespace clipper::train
