#include "clipper/eval/linear_probe.hpp"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <map>
#include <vector>

#include "clipper/core/error.hpp"

namespace clipper::eval {
namespace {

constexpr double kPi = 3.14159265358979323846;

// torch.optim.AdamW's update with its defaults (betas 0.9, 0.999; eps 1e-8), decoupled decay.
struct AdamW {
  explicit AdamW(double weight_decay) : wd(weight_decay) {}
  double wd;
  std::int64_t t = 0;
  std::vector<at::Tensor> m, v;
  void step(std::vector<at::Tensor>& params, double lr) {
    at::NoGradGuard no_grad;
    ++t;
    if (m.empty())
      for (auto& p : params) {
        m.push_back(at::zeros_like(p));
        v.push_back(at::zeros_like(p));
      }
    const double c1 = 1 - std::pow(0.9, static_cast<double>(t));
    const double c2 = 1 - std::pow(0.999, static_cast<double>(t));
    for (std::size_t i = 0; i < params.size(); ++i) {
      auto& p = params[i];
      const auto g = p.grad();
      p.mul_(1 - lr * wd);
      m[i].mul_(0.9).add_(g, 0.1);
      v[i].mul_(0.999).addcmul_(g, g, 0.001);
      const auto denom = (v[i] / c2).sqrt_().add_(1e-8);
      p.addcdiv_(m[i], denom, -lr / c1);
      p.mutable_grad().zero_();
    }
  }
};

double accuracy1(const at::Tensor& logits, const at::Tensor& y) {
  return logits.argmax(1).eq(y).to(at::kDouble).mean().item<double>();
}

// CLIP_benchmark's few-shot draw: samples in a random order, each kept while its class has fewer
// than k; an InputError when a class ends with fewer.
at::Tensor fewshot_indices(const at::Tensor& y, std::int64_t k, std::uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const auto perm = at::randperm(y.size(0), gen, at::kLong);
  std::map<std::int64_t, std::int64_t> counts;
  std::vector<std::int64_t> keep;
  for (std::int64_t i = 0; i < perm.size(0); ++i) {
    const auto p = perm[i].item<std::int64_t>();
    auto& c = counts[y[p].item<std::int64_t>()];
    if (c < k) {
      ++c;
      keep.push_back(p);
    }
  }
  for (const auto& [cls, c] : counts)
    if (c != k)
      throw core::InputError("linear probe: class " + std::to_string(cls) + " has " +
                             std::to_string(c) + " training samples, fewer than the " +
                             std::to_string(k) + " shots asked for");
  return at::tensor(keep, at::kLong);
}

// The weight decay with the best validation top-1 (the first of equals), as CLIP_benchmark's
// find_peak over `candidates` (indices into `wds`).
std::size_t find_peak(const std::vector<double>& wds, const std::vector<std::size_t>& candidates,
                      const at::Tensor& x, const at::Tensor& y, std::int64_t classes,
                      const LinearProbeOptions& o, const at::Tensor& vx, const at::Tensor& vy) {
  std::size_t best = 0;
  double best_acc = 0;
  for (const auto i : candidates) {
    const double acc = accuracy1(train_linear_head(x, y, classes, wds[i], o, vx), vy);
    if (best_acc < acc) {
      best = i;
      best_acc = acc;
    }
  }
  return best;
}

double sweep_weight_decay(const at::Tensor& x, const at::Tensor& y, std::int64_t classes,
                          const LinearProbeOptions& o, const at::Tensor& vx, const at::Tensor& vy) {
  std::vector<double> wds;  // numpy.logspace(-6, 2, num=97)
  for (int i = 0; i < 97; ++i) wds.push_back(std::pow(10.0, -6.0 + 8.0 * i / 96.0));
  std::vector<std::size_t> coarse;  // the 7 of logspace(-6, 2, num=7) among them
  for (std::size_t i = 0; i < wds.size(); i += 16) coarse.push_back(i);
  std::size_t peak = find_peak(wds, coarse, x, y, classes, o, vx, vy);
  for (std::size_t span = 8; span > 0; span /= 2) {
    const std::size_t left = peak >= span ? peak - span : 0;
    const std::size_t right = std::min(peak + span, wds.size() - 1);
    peak = find_peak(wds, {left, peak, right}, x, y, classes, o, vx, vy);
  }
  return wds[peak];
}

}  // namespace

at::Tensor train_linear_head(const at::Tensor& x, const at::Tensor& y, std::int64_t classes,
                             double wd, const LinearProbeOptions& o, const at::Tensor& eval_x) {
  at::AutoGradMode grad(true);  // the benchmark runs under NoGradGuard
  const std::int64_t N = x.size(0), D = x.size(1);
  auto gen = at::detail::createCPUGenerator(o.seed);
  // torch.nn.Linear's initialization: U(-1/sqrt(D), 1/sqrt(D)) for the weight and the bias.
  const double bound = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<at::Tensor> params = {
      at::empty({classes, D}, at::kFloat).uniform_(-bound, bound, gen).requires_grad_(),
      at::empty({classes}, at::kFloat).uniform_(-bound, bound, gen).requires_grad_()};
  AdamW opt(wd);
  const std::int64_t batches = (N + o.batch_size - 1) / o.batch_size;
  const double steps = static_cast<double>(o.epochs * batches);
  std::int64_t step = 0;
  const auto xf = x.to(at::kFloat);
  for (std::int64_t e = 0; e < o.epochs; ++e) {
    const auto perm = at::randperm(N, gen, at::kLong);
    for (std::int64_t b = 0; b < batches; ++b, ++step) {
      const auto idx =
          perm.narrow(0, b * o.batch_size, std::min(o.batch_size, N - b * o.batch_size));
      const auto logits = at::addmm(params[1], xf.index_select(0, idx), params[0].t());
      const auto loss = at::cross_entropy_loss(logits, y.index_select(0, idx));
      loss.backward();
      opt.step(params, 0.5 * (1 + std::cos(kPi * static_cast<double>(step) / steps)) * o.lr);
    }
  }
  at::NoGradGuard no_grad;
  return at::addmm(params[1], eval_x.to(at::kFloat), params[0].t());
}

LinearProbeResult linear_probe(const at::Tensor& train_x, const at::Tensor& train_y,
                               const at::Tensor& val_x, const at::Tensor& val_y,
                               const at::Tensor& test_x, const at::Tensor& test_y,
                               const LinearProbeOptions& o) {
  if (train_x.size(0) == 0) throw core::InputError("linear probe: the training split is empty");
  auto x = train_x, y = train_y.to(at::kLong);
  if (o.fewshot_k > 0) {
    const auto keep = fewshot_indices(y, o.fewshot_k, o.seed);
    x = x.index_select(0, keep);
    y = y.index_select(0, keep);
  }
  const std::int64_t classes = train_y.max().item<std::int64_t>() + 1;
  LinearProbeResult r;
  if (val_x.defined() && val_x.size(0) > 0) {
    r.weight_decay = sweep_weight_decay(x, y, classes, o, val_x, val_y.to(at::kLong));
    if (o.fewshot_k < 0) {  // full training: train + validation, as CLIP_benchmark
      x = at::cat({x, val_x});
      y = at::cat({y, val_y.to(at::kLong)});
    }
  }
  const auto logits = train_linear_head(x, y, classes, r.weight_decay, o, test_x);
  r.metrics = classification_metrics(logits, test_y);
  return r;
}

}  // namespace clipper::eval
