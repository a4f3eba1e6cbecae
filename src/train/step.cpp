#include "clipper/train/step.hpp"

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <chrono>
#include <cmath>
#include <map>

#include "clipper/core/error.hpp"
#include "clipper/dist/grad_reducer.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/loss/clip_loss.hpp"
#include "clipper/loss/coca_loss.hpp"
#include "clipper/loss/contrastive_loss.hpp"
#include "clipper/optim/param_groups.hpp"
#include "clipper/train/precision.hpp"
#include "clipper/train/sharding.hpp"
#include "clipper/train/siglip2_step.hpp"

namespace clipper::train {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void to_channels_last(model::ClipImpl& model) {
  if (!model.visual_resnet) return;
  at::NoGradGuard no_grad;
  for (auto& p : model.visual_resnet->parameters())
    if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
}

// The running statistics of BatchNorm layers (ModifiedResNet), which every forward in train mode
// updates before the step is judged; empty for towers without them.
std::vector<at::Tensor> batch_norm_statistics(model::ClipImpl& model) {
  std::vector<at::Tensor> stats;
  if (!model.visual_resnet) return stats;
  for (const auto& b : model.visual_resnet->named_buffers()) stats.push_back(b.value());
  return stats;
}

// Puts back the statistics saved before a step the ranks agreed to skip (on the device, no host
// read): a NaN batch would otherwise leave NaN means and variances that evaluation then uses.
void restore_if_skipped(std::vector<at::Tensor>& stats, const std::vector<at::Tensor>& saved,
                        const at::Tensor& bad) {
  at::NoGradGuard no_grad;
  for (std::size_t i = 0; i < stats.size(); ++i) stats[i].copy_(at::where(bad, saved[i], stats[i]));
}

}  // namespace

StepConfig StepConfig::from(const config::Config& cfg) {
  config::OptimConfig optim = cfg.optim;
  // Continuing an OpenCLIP 3.3.0 run keeps the rule its main.py split the groups with.
  if (optim.no_decay == config::NoDecay::automatic && !cfg.checkpoint.resume_openclip.empty())
    optim.no_decay = config::NoDecay::openclip3;
  return {optim,
          cfg.loss,
          cfg.dist.bucket_mb,
          cfg.dist.overlap_grad_reduce,
          static_cast<int>(cfg.dist.zero),
          cfg.dist.prefetch,
          cfg.dist.gather_bf16,
          {cfg.train.ema_decay, cfg.train.ema_warmup_power},
          !cfg.data.naflex_seq_lens.empty()};
}

TrainStep::TrainStep(model::Clip model, std::shared_ptr<dist::ProcessGroup> pg,
                     const StepConfig& cfg, at::Device device, StepOptions options)
    : model_(std::move(model)),
      pg_(std::move(pg)),
      device_(device),
      options_(options),
      grad_clip_norm_(cfg.optim.grad_clip_norm),
      normalize_(model_->spec(), device),
      stats_(device) {
  model_->to(device_);
  if (options_.channels_last) to_channels_last(*model_);
  // Every rank starts from rank 0's parameters and buffers.
  if (pg_->size() > 1) {
    std::vector<at::Tensor> all;
    for (const auto& [name, t] : model_->state_dict()) all.push_back(t);
    dist::broadcast_tensors(all, *pg_, 0, cfg.bucket_mb);
  }
  loss_ = loss::make_loss(cfg.loss, pg_);
  loss_->unequal_batches = cfg.unequal_batches;
  loss_cfg_ = cfg.loss;
  make_sharding(cfg);
  // After the broadcast and the layout changes: the average starts at the weights every rank has.
  if (cfg.ema.decay > 0) make_ema(cfg.ema);
}

// Full sharding averages this rank's shards of the parameters; the units are whole until the
// first step, so the average starts from shards taken from them.
void TrainStep::make_ema(const EmaOptions& options) {
  std::optional<ShardedParameters> sharded;
  if (zero_ == 3) {
    auto* sharding = sharding_.get();
    sharded = ShardedParameters{sharding->layout(), pg_->rank(), sharded_names_,
                                [sharding] { return sharding->current_parameter_shards(); }};
  }
  ema_ = std::make_unique<WeightEma>(*model_, options, std::move(sharded));
}

// The sharding sees the trainable parameters in model order; weight decay and the lr scale follow
// the parameter groups, per parameter (the sharded stages apply them per shard segment).
void TrainStep::make_sharding(const StepConfig& cfg) {
  zero_ = cfg.zero;
  ShardingSetup setup;
  setup.adamw = optim::adamw_options(cfg.optim, model_->spec().name);
  setup.groups = optim::make_param_groups(*model_, cfg.optim);
  std::map<std::string, optim::ParamSetting> setting;
  for (const auto& g : setup.groups)
    for (const auto& n : g.names) setting[n] = {g.weight_decay, g.lr_scale};
  for (const auto& item : model_->named_parameters(/*recurse=*/true)) {
    if (!item.value().requires_grad()) continue;
    setup.params.push_back(item.value());
    setup.names.push_back(item.key());
    setup.settings.push_back(setting.at(item.key()));
  }
  params_ = setup.params;
  if (zero_ == 3) sharded_names_ = setup.names;
  setup.pg = pg_;
  setup.bucket_mb = cfg.bucket_mb;
  setup.overlap = cfg.overlap_grad_reduce;
  setup.prefetch = cfg.prefetch == config::Prefetch::on ||
                   (cfg.prefetch == config::Prefetch::automatic && device_.is_cuda());
  setup.gather_bf16 = cfg.gather_bf16;
  sharding_ = train::make_sharding(zero_, std::move(setup));
}

TrainStep::~TrainStep() = default;

namespace {

// The model's forward: CLIP's, or CoCa's with its caption logits and labels.
struct Forward {
  model::ClipOutput clip;
  at::Tensor logits, labels;  // CoCa only
};

Forward run_model(model::ClipImpl& m, const at::Tensor& images, const at::Tensor& tokens,
                  const at::Tensor& grids) {
  if (!m.is_coca()) return {m.forward(images, tokens, grids), {}, {}};
  if (grids.defined())
    throw core::InputError("CoCa models take square pictures, not NaFlex patches");
  auto o = m.forward_coca(images, tokens);
  return {{o.image_features, o.text_features, o.logit_scale, o.logit_bias}, o.logits, o.labels};
}

}  // namespace

void TrainStep::set_teacher(model::Clip teacher) {
  if (model_->is_coca())
    throw core::InputError("distillation (loss.distill_from) is not available for CoCa models");
  if (loss_cfg_.kind != config::LossKind::clip)
    throw core::InputError("distillation (loss.distill_from) needs loss.kind clip");
  at::NoGradGuard no_grad;
  teacher->to(device_);
  teacher->eval();
  for (auto& p : teacher->parameters()) p.requires_grad_(false);
  teacher_ = std::move(teacher);
  distill_ = std::make_unique<loss::ClipLoss>(pg_, loss_cfg_);
}

void TrainStep::set_siglip2(std::unique_ptr<Siglip2Step> siglip2) {
  if (siglip2 && teacher_)
    throw core::InputError("loss.siglip2 and loss.distill_from exclude each other");
  siglip2_ = std::move(siglip2);
}

model::ClipOutput TrainStep::teach(const at::Tensor& images, const at::Tensor& tokens,
                                   const at::Tensor& grids) {
  at::NoGradGuard no_grad;
  return teacher_->forward(images, tokens, grids);
}

at::Tensor TrainStep::coca_loss_of(const model::ClipOutput& out, const at::Tensor& logits,
                                   const at::Tensor& labels) {
  // open_clip's CoCaLoss: the contrastive term only when its weight is not 0, then the caption.
  at::Tensor loss = loss_cfg_.coca_caption_weight *
                    loss::caption_loss(logits, labels, model_->spec().text_pad_id);
  if (loss_cfg_.coca_clip_weight != 0.0)
    loss = loss + loss_cfg_.coca_clip_weight * loss_of(out, nullptr);
  return loss;
}

at::Tensor TrainStep::loss_of(const model::ClipOutput& out, const model::ClipOutput* teacher) {
  if (!teacher)
    return loss_->forward(out.image_features, out.text_features, out.logit_scale, out.logit_bias);
  const auto terms = distill_->forward_distill(out.image_features, out.text_features,
                                               out.logit_scale, teacher->image_features,
                                               teacher->text_features, teacher->logit_scale);
  return terms.contrastive + terms.distill;  // OpenCLIP: total_loss = sum(losses.values())
}

at::Tensor TrainStep::prepare_images(const at::Tensor& images) const {
  return normalize_(images);
}

void TrainStep::sync_for_timing() const {
  if (options_.time_phases && device_.is_cuda()) torch::cuda::synchronize();
}

StepResult TrainStep::run(const std::vector<MicroBatch>& micro, double lr) {
  StepResult r;
  model_->train();
  for (auto& p : params_)
    if (p.grad().defined()) p.mutable_grad() = at::Tensor();
  std::vector<at::Tensor> bn_stats = batch_norm_statistics(*model_), bn_saved;
  for (const auto& t : bn_stats) bn_saved.push_back(t.clone());
  sharding_->begin_step();
  const at::Tensor loss = forward_backward(micro, r);
  auto t0 = Clock::now();
  sharding_->finish_backward();
  dist::broadcast_buffers(model_->buffers(), *pg_);  // BatchNorm statistics: rank 0's, as DDP
  const StepHealth health = reduce_and_check(loss);
  restore_if_skipped(bn_stats, bn_saved, health.bad);
  sync_for_timing();
  r.reduce_s = seconds_since(t0);
  t0 = Clock::now();
  apply(lr, health);
  sync_for_timing();
  r.optimizer_s = seconds_since(t0);
  if (++unread_steps_ >= options_.read_every) {
    static_cast<StatsWindow&>(r) = stats_.read_back();
    unread_steps_ = 0;
  } else {
    r.loss = r.grad_norm = r.logit_scale = std::nan("");
  }
  return r;
}

StepResult TrainStep::read_back() {
  StepResult r;
  static_cast<StatsWindow&>(r) = stats_.read_back();
  unread_steps_ = 0;
  return r;
}

at::Tensor TrainStep::forward_backward(const std::vector<MicroBatch>& micro, StepResult& r) {
  if (micro.size() > 1) {
    core::require(!siglip2_, "loss.siglip2 runs one micro-batch per step (train.accum_freq 1)");
    return forward_backward_accumulated(micro, r);
  }
  const auto t0 = Clock::now();
  at::Tensor loss;
  {
    const MicroBatch& m = micro.at(0);
    AutocastGuard autocast(options_.bf16, device_.type());
    const at::Tensor images = prepare_images(m.images), tokens = m.tokens.to(device_, true);
    const at::Tensor grids = m.grids.defined() ? m.grids.to(device_, true) : at::Tensor();
    const auto contrastive = [this](const model::ClipOutput& o) { return loss_of(o, nullptr); };
    if (siglip2_) {
      loss = siglip2_->loss(*model_, ema_.get(), images, tokens, m.regions, contrastive);
    } else if (const auto f = run_model(*model_, images, tokens, grids); f.logits.defined()) {
      loss = coca_loss_of(f.clip, f.logits, f.labels);
    } else if (teacher_) {
      const auto taught = teach(images, tokens, grids);
      loss = loss_of(f.clip, &taught);
    } else {
      loss = contrastive(f.clip);
    }
  }
  sync_for_timing();
  r.forward_s = seconds_since(t0);
  const auto t1 = Clock::now();
  sharding_->begin_backward();
  loss.backward();
  sync_for_timing();
  r.backward_s = seconds_since(t1);
  return loss.detach();
}

// Cache every micro-batch's features without grad, then recompute each with grad against the
// whole accumulated batch. The loss is the same full-batch loss each time; the gradients of the n
// passes add up to its gradient. logit_scale (and logit_bias) take part in one pass only, so
// their gradient is counted once.
at::Tensor TrainStep::forward_backward_accumulated(const std::vector<MicroBatch>& micro,
                                                   StepResult& r) {
  const auto t0 = Clock::now();
  const std::size_t n = micro.size();
  std::vector<at::Tensor> images, tokens, grids, img_f, txt_f, t_img_f, t_txt_f, logits, labels;
  at::Tensor t_scale;
  for (const auto& m : micro) {
    images.push_back(prepare_images(m.images));
    grids.push_back(m.grids.defined() ? m.grids.to(device_, true) : at::Tensor());
    tokens.push_back(m.tokens.to(device_, /*non_blocking=*/true));
  }
  {
    at::NoGradGuard no_grad;
    AutocastGuard autocast(options_.bf16, device_.type());
    for (std::size_t j = 0; j < n; ++j) {
      const auto f = run_model(*model_, images[j], tokens[j], grids[j]);
      img_f.push_back(f.clip.image_features);
      txt_f.push_back(f.clip.text_features);
      if (f.logits.defined()) {  // CoCa: open_clip caches the caption logits as well
        logits.push_back(f.logits);
        labels.push_back(f.labels);
      }
      if (!teacher_) continue;
      auto taught = teach(images[j], tokens[j], grids[j]);
      t_img_f.push_back(taught.image_features);
      t_txt_f.push_back(taught.text_features);
      t_scale = taught.logit_scale;
    }
  }
  // The teacher's side of the whole accumulated batch, computed once.
  model::ClipOutput taught;
  if (teacher_) taught = {at::cat(t_img_f), at::cat(t_txt_f), t_scale, {}};
  sync_for_timing();
  r.forward_s = seconds_since(t0);
  const auto t1 = Clock::now();
  at::Tensor loss_value;
  for (std::size_t j = 0; j < n; ++j) {
    const bool last = j + 1 == n;
    at::Tensor loss;
    {
      AutocastGuard autocast(options_.bf16, device_.type());
      const auto f = run_model(*model_, images[j], tokens[j], grids[j]);
      const auto& out = f.clip;
      auto all_i = img_f, all_t = txt_f;
      all_i[j] = out.image_features;
      all_t[j] = out.text_features;
      auto scale = last ? out.logit_scale : out.logit_scale.detach();
      auto bias = out.logit_bias.defined() && !last ? out.logit_bias.detach() : out.logit_bias;
      const model::ClipOutput whole{at::cat(all_i), at::cat(all_t), scale, bias};
      if (f.logits.defined()) {
        auto all_logits = logits;
        all_logits[j] = f.logits;
        loss = coca_loss_of(whole, at::cat(all_logits), at::cat(labels));
      } else {
        loss = loss_of(whole, teacher_ ? &taught : nullptr);
      }
    }
    if (last) sharding_->begin_backward();
    loss.backward();
    loss_value = loss.detach();
  }
  sync_for_timing();
  r.backward_s = seconds_since(t1);
  return loss_value;
}

// The loss and the NaN/Inf check, decided on the device: one small collective (mean loss,
// whether any rank saw a non-finite loss, and the stage's term of the gradient norm) and no host
// read. The global norm is the same on every rank (sharded: the root of the summed squared shard
// norms), and so is the skip decision: a NaN or Inf anywhere makes the global norm non-finite.
StepHealth TrainStep::reduce_and_check(const at::Tensor& loss) {
  const std::vector<at::Tensor> grads = sharding_->gradients();
  at::Tensor term = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device_));
  if (!grads.empty()) term = sharding_->norm_term(at::stack(at::_foreach_norm(grads, 2)));
  const at::Tensor bad_loss = at::logical_not(at::isfinite(loss));
  at::Tensor packed = at::stack({loss.to(at::kDouble), bad_loss.to(at::kDouble), term});
  if (pg_->size() > 1) {
    packed = packed.to(pg_->device());
    pg_->all_reduce(packed, dist::ReduceOp::sum, "loss and NaN check");
    packed = packed.to(device_);
  }
  const at::Tensor norm = sharding_->global_norm(packed[2]);
  return {packed[0].div(static_cast<double>(pg_->size())),
          packed[1].gt(0).logical_or(at::logical_not(at::isfinite(norm))), norm};
}

// A bad step reaches the optimizer as found_inf = 1, which leaves parameters and optimizer state
// untouched; clipping scales by min(1, clip / norm), which leaves other steps exact.
void TrainStep::apply(double lr, const StepHealth& health) {
  std::vector<at::Tensor> grads = sharding_->gradients();
  if (grad_clip_norm_ > 0 && !grads.empty()) {
    const at::Tensor coef = (grad_clip_norm_ / (health.grad_norm + 1e-6)).clamp_max(1.0);
    at::_foreach_mul_(grads, coef.to(grads[0].scalar_type()));
  }
  sharding_->step(lr, health.bad.to(at::kFloat));
  sharding_->between_steps([&] { after_update(health); });
  // After the clamp: every rank averages the same values (whole weights, or with full sharding
  // its shards of them, the clamped scale taken back); a skipped step pulls the average toward
  // its unchanged weights, as timm's does.
  if (ema_) ema_->update();
  if (siglip2_) siglip2_->after_update(health.bad, *pg_);
}

// Every rank sees the same whole weights here (full sharding gathers what this reads).
void TrainStep::after_update(const StepHealth& health) {
  at::NoGradGuard no_grad;
  model_->logit_scale.clamp_(0.0, std::log(100.0));
  stats_.update(health.loss, health.bad, health.grad_norm, model_->logit_scale.exp());
}

optim::AdamW& TrainStep::optimizer() {
  if (auto* whole = sharding_->whole_optimizer()) return *whole;
  throw core::Error("TrainStep::optimizer(): dist.zero=" + std::to_string(zero_) +
                    " shards the optimizer; use optimizer_shards()");
}

optim::FlatShards TrainStep::optimizer_shards() const {
  return sharding_->optimizer_shards();
}

void TrainStep::load_optimizer_shards(const optim::SavedFlatShards& saved) {
  sharding_->load_optimizer_shards(saved);
}

std::optional<optim::FlatShards> TrainStep::parameter_shards() {
  return sharding_->parameter_shards();
}

std::int64_t TrainStep::optimizer_state_bytes() const {
  return sharding_->optimizer_state_bytes();
}

std::int64_t TrainStep::peak_parameter_bytes() const {
  return sharding_->peak_parameter_bytes();
}

ShardingCounters TrainStep::sharding_counters() const {
  return sharding_->counters();
}

void TrainStep::read_parameters(const std::function<void()>& fn) {
  if (whole_depth_ > 0) return fn();
  sharding_->between_steps(fn);
}

AveragedWeights::AveragedWeights(TrainStep& step, bool on) : step_(step), on_(on && step.ema_) {
  if (!on_) return;
  if (step_.zero_ == 3) {
    core::require(step_.whole_depth_ == 0,
                  "AveragedWeights inside WholeParameters: the average is swapped into the "
                  "parameter shards, before the whole parameters are gathered");
    step_.sharding_->release_whole();  // the shards current, no unit whole
  }
  step_.ema_->swap_with_model();
}

AveragedWeights::~AveragedWeights() {
  if (!on_) return;
  if (step_.zero_ == 3 && step_.whole_depth_ == 0) step_.sharding_->release_whole();
  step_.ema_->swap_with_model();
}

WholeParameters::WholeParameters(TrainStep& step) : step_(step) {
  if (step_.whole_depth_ == 0) step_.sharding_->gather_whole();
  ++step_.whole_depth_;
}

WholeParameters::~WholeParameters() {
  if (--step_.whole_depth_ == 0) step_.sharding_->release_whole();
}

}  // namespace clipper::train
