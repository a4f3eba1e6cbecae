#include "clipper/train/step.hpp"

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <chrono>
#include <cmath>

#include "clipper/dist/grad_reducer.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/loss/contrastive_loss.hpp"
#include "clipper/optim/param_groups.hpp"
#include "clipper/train/precision.hpp"

namespace clipper::train {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace

TrainStep::TrainStep(model::Clip model, std::shared_ptr<dist::ProcessGroup> pg,
                     const config::Config& cfg, at::Device device, StepOptions options)
    : model_(std::move(model)),
      pg_(std::move(pg)),
      device_(device),
      options_(options),
      normalize_(model_->spec(), device) {
  model_->to(device_);
  if (options_.channels_last && model_->visual_resnet) {
    at::NoGradGuard no_grad;
    for (auto& p : model_->visual_resnet->parameters())
      if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
  }
  // Every rank starts from rank 0's parameters and buffers.
  if (pg_->size() > 1) {
    std::vector<at::Tensor> all;
    for (const auto& [name, t] : model_->state_dict()) all.push_back(t);
    dist::broadcast_tensors(all, *pg_, 0, cfg.dist.bucket_mb);
  }
  auto groups = optim::make_param_groups(*model_, cfg.optim.weight_decay);
  for (const auto& g : groups) params_.insert(params_.end(), g.params.begin(), g.params.end());
  optimizer_ = std::make_unique<optim::AdamW>(
      std::move(groups),
      optim::AdamWOptions{cfg.optim.beta1, cfg.optim.beta2, cfg.optim.eps, cfg.optim.fused});
  loss_ = loss::make_loss(cfg.loss, pg_);
  // The reducer wants the trainable parameters in model order.
  std::vector<at::Tensor> ordered;
  for (const auto& p : model_->parameters())
    if (p.requires_grad()) ordered.push_back(p);
  reducer_ = std::make_unique<dist::GradReducer>(ordered, pg_, cfg.dist.bucket_mb,
                                                 cfg.dist.overlap_grad_reduce);
  window_ = at::zeros({kWindowSize}, at::TensorOptions().dtype(at::kDouble).device(device_));
  window_[kLastLoss].fill_(std::nan(""));  // no good step yet
}

TrainStep::~TrainStep() = default;

at::Tensor TrainStep::prepare_images(const at::Tensor& images) const {
  return normalize_(images);
}

StepResult TrainStep::run(const std::vector<MicroBatch>& micro, double lr) {
  StepResult r;
  const bool cuda = device_.is_cuda();
  auto sync = [&] {
    if (options_.time_phases && cuda) torch::cuda::synchronize();
  };
  model_->train();
  optimizer_->zero_grad();
  auto t0 = Clock::now();

  std::vector<at::Tensor> images, tokens;
  for (const auto& m : micro) {
    images.push_back(prepare_images(m.images));
    tokens.push_back(m.tokens.to(device_, /*non_blocking=*/true));
  }
  at::Tensor loss_value;
  const std::size_t n = micro.size();
  if (n == 1) {
    at::Tensor loss;
    {
      AutocastGuard autocast(options_.bf16, device_.type());
      auto out = model_->forward(images[0], tokens[0]);
      loss = loss_->forward(out.image_features, out.text_features, out.logit_scale, out.logit_bias);
    }
    sync();
    r.forward_s = seconds_since(t0);
    t0 = Clock::now();
    reducer_->begin_step();
    loss.backward();
    loss_value = loss.detach();
  } else {
    // Contrastive-correct accumulation: cache every micro-batch's features without grad ...
    std::vector<at::Tensor> img_f, txt_f;
    {
      at::NoGradGuard no_grad;
      AutocastGuard autocast(options_.bf16, device_.type());
      for (std::size_t j = 0; j < n; ++j) {
        auto out = model_->forward(images[j], tokens[j]);
        img_f.push_back(out.image_features);
        txt_f.push_back(out.text_features);
      }
    }
    sync();
    r.forward_s = seconds_since(t0);
    t0 = Clock::now();
    // ... then recompute each with grad against the whole accumulated batch. The loss is the same
    // full-batch loss each time; the gradients of the n passes add up to its gradient. logit_scale
    // (and logit_bias) take part in one pass only, so their gradient is counted once.
    for (std::size_t j = 0; j < n; ++j) {
      at::Tensor loss;
      {
        AutocastGuard autocast(options_.bf16, device_.type());
        auto out = model_->forward(images[j], tokens[j]);
        auto all_i = img_f, all_t = txt_f;
        all_i[j] = out.image_features;
        all_t[j] = out.text_features;
        const bool last = j + 1 == n;
        auto scale = last ? out.logit_scale : out.logit_scale.detach();
        auto bias = out.logit_bias.defined() && !last ? out.logit_bias.detach() : out.logit_bias;
        loss = loss_->forward(at::cat(all_i), at::cat(all_t), scale, bias);
      }
      if (j + 1 == n) reducer_->begin_step();
      loss.backward();
      loss_value = loss.detach();
    }
  }
  sync();
  r.backward_s = seconds_since(t0);
  t0 = Clock::now();
  reducer_->finish();

  // The loss and the NaN/Inf check, decided on the device: one small collective (mean loss,
  // whether any rank saw a non-finite loss or gradient, and the gradient norm, already the same
  // on every rank) and no host read. A bad step reaches the optimizer as found_inf = 1, which
  // leaves parameters and optimizer state untouched.
  std::vector<at::Tensor> grads;
  for (const auto& p : params_)
    if (p.grad().defined()) grads.push_back(p.grad());
  at::Tensor norm = grads.empty()
                        ? at::zeros({}, at::TensorOptions().device(device_))
                        : at::linalg_vector_norm(at::stack(at::_foreach_norm(grads, 2)), 2);
  at::Tensor bad =
      at::logical_not(at::isfinite(norm)).logical_or(at::logical_not(at::isfinite(loss_value)));
  at::Tensor packed =
      at::stack({loss_value.to(at::kDouble), bad.to(at::kDouble), norm.to(at::kDouble)});
  if (pg_->size() > 1) {
    packed = packed.to(pg_->device());
    pg_->all_reduce(packed, dist::ReduceOp::sum, "loss and NaN check");
    packed = packed.to(device_).div_(static_cast<double>(pg_->size()));
  }
  const at::Tensor bad_step = packed[1].gt(0);
  const at::Tensor found_inf = bad_step.to(at::kFloat);
  sync();
  r.reduce_s = seconds_since(t0);
  t0 = Clock::now();
  if (options_.grad_clip_norm > 0 && !grads.empty()) {
    // Scale by clip / norm when the norm is larger (min(1, ...) leaves other steps exact).
    const at::Tensor coef = (options_.grad_clip_norm / (packed[2] + 1e-6)).clamp_max(1.0);
    at::_foreach_mul_(grads, coef.to(at::kFloat));
  }
  optimizer_->step(lr, found_inf);
  {
    at::NoGradGuard no_grad;
    model_->logit_scale.clamp_(0.0, std::log(100.0));
    // What read_back() reports, kept on the device: sums over the steps since the last read.
    const at::Tensor is_bad = bad_step.to(at::kDouble);
    const at::Tensor in_row = (window_[kInRow] + 1.0) * is_bad;
    window_ =
        at::stack({window_[kLossSum] + at::where(bad_step, 0.0, packed[0]), window_[kSteps] + 1.0,
                   window_[kSkipped] + is_bad, in_row, at::maximum(window_[kMaxInRow], in_row),
                   packed[2], model_->logit_scale.exp().to(at::kDouble), is_bad,
                   at::where(bad_step, window_[kLastLoss], packed[0])});
  }
  sync();
  r.optimizer_s = seconds_since(t0);
  if (++unread_steps_ >= options_.read_every)
    read_window(r);
  else
    r.loss = r.grad_norm = r.logit_scale = std::nan("");
  return r;
}

StepResult TrainStep::read_back() {
  StepResult r;
  read_window(r);
  return r;
}

void TrainStep::read_window(StepResult& r) {
  r.read = true;
  unread_steps_ = 0;
  const auto host = window_.cpu();  // the one host read
  const double* v = host.data_ptr<double>();
  r.window_steps = static_cast<std::int64_t>(v[kSteps]);
  r.window_skipped = static_cast<std::int64_t>(v[kSkipped]);
  r.window_loss_sum = v[kLossSum];
  const auto good = r.window_steps - r.window_skipped;
  r.loss = good > 0 ? v[kLossSum] / static_cast<double>(good) : std::nan("");
  r.nan_in_row = static_cast<std::int64_t>(v[kInRow]);
  r.max_nan_in_row = static_cast<std::int64_t>(v[kMaxInRow]);
  r.grad_norm = v[kNorm];
  r.logit_scale = v[kScale];
  r.skipped = v[kLastBad] > 0;
  r.last_loss = v[kLastLoss];
  // A new window: sums restart, the run of bad steps and the last good loss carry over.
  window_ = at::zeros_like(window_);
  window_[kInRow].fill_(v[kInRow]);
  window_[kMaxInRow].fill_(v[kInRow]);
  window_[kLastLoss].fill_(v[kLastLoss]);
}

void TrainStep::set_nan_in_row(std::int64_t n) {
  window_[kInRow].fill_(static_cast<double>(n));
  window_[kMaxInRow].fill_(static_cast<double>(n));
}

}  // namespace clipper::train
