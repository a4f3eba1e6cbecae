// One rank of a multi-process test, started by `clipper launch`, torchrun or run_ranks().
//
//   dist_worker SCENARIO [key=value ...]
//
// Scenarios: clip, siglip, distill (distributed loss and gradients vs one process on the
// concatenated batch), clip_grads (each rank's gradients, for open_clip's to be compared with),
// train (one or more SGD steps of a two-tower stand-in model vs one process with the whole batch),
// reshard (a checkpoint resumed on another world size), unshared (a checkpoints folder that is not
// the same on every rank), die / stall (a rank dies or stops answering mid-step), wait_signal,
// ignore_stop (ignores the stop signals, with a child in its process group), exit, hello. Each rank
// writes its last status line to out/rank<R>.log ("OK ..." or "FAIL ..." or "error: ...") and
// exits 0 on success, 3 on a mismatch, 1 on an error.
#include <ATen/ATen.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "clipper/checkpoint/checkpoint.hpp"
#include "clipper/config/config.hpp"
#include "clipper/dist/grad_reducer.hpp"
#include "clipper/dist/launch.hpp"
#include "clipper/dist/param_units.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/io/openclip_stream.hpp"
#include "clipper/loss/clip_loss.hpp"
#include "clipper/loss/siglip_loss.hpp"
#include "clipper/model/model_spec.hpp"
#include "clipper/train/step.hpp"
#include "clipper/trainer/state_parts.hpp"

namespace {

using clipper::dist::ProcessGroup;
using clipper::dist::ReduceOp;

std::map<std::string, std::string> g_args;
std::string g_out;
int g_rank = 0;

std::string arg(const std::string& k, const std::string& dflt) {
  auto it = g_args.find(k);
  return it == g_args.end() ? dflt : it->second;
}
double arg_d(const std::string& k, double d) {
  return std::stod(arg(k, std::to_string(d)));
}
long arg_i(const std::string& k, long d) {
  return std::stol(arg(k, std::to_string(d)));
}

void report(const std::string& line) {
  std::cout << "[rank " << g_rank << "] " << line << std::endl;
  if (!g_out.empty())
    std::ofstream(g_out + "/rank" + std::to_string(g_rank) + ".log", std::ios::app) << line << "\n";
}

at::Tensor normalize(const at::Tensor& x) {
  return x / x.norm(2, {1}, true);
}

double max_abs(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

std::shared_ptr<ProcessGroup> borrowed(ProcessGroup& pg) {
  return std::shared_ptr<ProcessGroup>(std::shared_ptr<void>(), &pg);
}

struct Check {
  double tol;
  double worst = 0;
  std::ostringstream text;
  void add(const std::string& name, double diff) {
    worst = std::max(worst, diff);
    text << " " << name << "=" << diff;
  }
  int finish(const std::string& scenario) {
    const bool ok = worst <= tol;
    std::ostringstream t;
    t << (ok ? "OK " : "FAIL ") << scenario << " max|diff|" << text.str() << " (tol " << tol << ")";
    report(t.str());
    return ok ? 0 : 3;
  }
};

clipper::config::LossConfig loss_config() {
  clipper::config::LossConfig c;
  c.kind = clipper::config::parse_choice<clipper::config::LossKind>(arg("loss", "clip"));
  c.local_loss = arg("local", "1") == "1";
  c.gather_with_grad = arg("grad", "1") == "1";
  c.siglip_exchange =
      clipper::config::parse_choice<clipper::config::SiglipExchange>(arg("exchange", "gather"));
  c.chunked = arg("chunked", "0") == "1";
  return c;
}

at::ScalarType dtype() {
  return arg("dtype", "f64") == "f32" ? at::kFloat : at::kDouble;
}
double tolerance() {
  return dtype() == at::kDouble ? 1e-9 : 2e-5;
}

// --- losses ------------------------------------------------------------------------------------
// Unit-row image and text features of the whole global batch, from a fixed seed.
struct Features {
  at::Tensor img, txt;
};
Features global_features(std::uint64_t seed, long rows, long d) {
  at::manual_seed(seed);
  const auto opt = at::TensorOptions().dtype(dtype());
  Features f;
  f.img = normalize(at::randn({rows, d}, opt));
  f.txt = normalize(at::randn({rows, d}, opt));
  return f;
}

// Leaf tensors for one loss call: rows [first, first + n) of the global features, and a fresh
// logit scale and bias (SigLIP's scale 10, CLIP's 14.3; bias -10 of shape bias_shape).
struct LossLeaves {
  at::Tensor img, txt, scale, bias;
};
LossLeaves loss_leaves(const Features& all, long first, long n, bool siglip,
                       at::IntArrayRef bias_shape = {}) {
  const auto opt = all.img.options();
  return {all.img.narrow(0, first, n).clone().requires_grad_(true),
          all.txt.narrow(0, first, n).clone().requires_grad_(true),
          at::full({}, siglip ? 10.0 : 14.3, opt).requires_grad_(true),
          at::full(bias_shape, -10.0, opt).requires_grad_(true)};
}

// A per-rank value summed over ranks and divided by the world size (the mean loss, or a shared
// parameter's gradient as GradReducer averages it), against one process's.
double mean_over_ranks_diff(ProcessGroup& pg, const at::Tensor& mine, const at::Tensor& ref) {
  at::Tensor sum = mine.detach().clone();
  pg.all_reduce(sum);
  return max_abs(sum / pg.size(), ref.detach());
}

int run_loss(ProcessGroup& pg, const std::string& kind) {
  const int w = pg.size(), r = pg.rank();
  const long b = arg_i("batch", 4), d = arg_i("dim", 8);
  // uneven=1: rank k holds b + k pairs (NaFlex batches by token budget, loss.unequal_batches).
  const bool uneven = arg("uneven", "0") == "1";
  auto rows_of = [&](long k) { return uneven ? b + k : b; };
  long first = 0, total = 0;
  for (long k = 0; k < w; ++k) {
    if (k < r) first += rows_of(k);
    total += rows_of(k);
  }
  const long n = rows_of(r);
  auto cfg = loss_config();
  cfg.kind = clipper::config::parse_choice<clipper::config::LossKind>(kind);
  const bool siglip = kind == "siglip";
  const Features all = global_features(1234, total, d);

  auto mine = loss_leaves(all, first, n, siglip);
  auto loss_fn = clipper::loss::make_loss(cfg, borrowed(pg));
  loss_fn->unequal_batches = uneven && arg("switch", "1") == "1";
  if (uneven && !loss_fn->unequal_batches) {  // switch=0: refused with an error naming the sizes
    try {
      loss_fn->forward(mine.img, mine.txt, mine.scale, mine.bias);
    } catch (const clipper::dist::DistError& e) {
      report("OK " + kind + " refused: " + e.what());
      return 0;
    }
    report("FAIL " + kind + ": unequal batches without the switch were not refused");
    return 3;
  }
  at::Tensor loss = loss_fn->forward(mine.img, mine.txt, mine.scale, mine.bias);
  // A second call checks the cached labels.
  loss = loss_fn->forward(mine.img, mine.txt, mine.scale, mine.bias);
  loss.backward();

  ProcessGroup single;
  auto whole = loss_leaves(all, 0, total, siglip);
  at::Tensor ref = clipper::loss::make_loss(cfg, borrowed(single))
                       ->forward(whole.img, whole.txt, whole.scale, whole.bias);
  ref.backward();

  Check c{tolerance()};
  c.add("loss", mean_over_ranks_diff(pg, loss, ref));
  if (cfg.gather_with_grad || siglip) {
    // This rank's gradient is d(sum over ranks of their losses)/d(own features); the mean loss
    // is what one process computes, so divide by the world size (what GradReducer does).
    c.add("d_image", max_abs(mine.img.grad() / w, whole.img.grad().narrow(0, first, n)));
    c.add("d_text", max_abs(mine.txt.grad() / w, whole.txt.grad().narrow(0, first, n)));
    c.add("d_scale", mean_over_ranks_diff(pg, mine.scale.grad(), whole.scale.grad()));
    if (siglip) c.add("d_bias", mean_over_ranks_diff(pg, mine.bias.grad(), whole.bias.grad()));
  }
  return c.finish(kind);
}

// loss.chunked against the unchunked form on the same features, on this rank: the loss and this
// rank's gradients (features, scale, bias) before any averaging, for CLIP's local loss (with and
// without gather_with_grad: grad=) and SigLIP (against exchange=). Tolerance tol= (1e-12).
int run_chunked(ProcessGroup& pg, const std::string& kind) {
  const int r = pg.rank();
  const long b = arg_i("batch", 5), d = arg_i("dim", 7);
  const bool siglip = kind == "siglip";
  const Features all = global_features(4321, pg.size() * b, d);
  std::vector<at::Tensor> result[2];
  for (const bool chunked : {false, true}) {
    auto cfg = loss_config();
    cfg.kind = clipper::config::parse_choice<clipper::config::LossKind>(kind);
    cfg.chunked = chunked;
    auto x = loss_leaves(all, r * b, b, siglip, {1});
    at::Tensor loss =
        clipper::loss::make_loss(cfg, borrowed(pg))->forward(x.img, x.txt, x.scale, x.bias);
    loss.backward();
    result[chunked] = {loss.detach(), x.img.grad(), x.txt.grad(), x.scale.grad()};
    if (siglip) result[chunked].push_back(x.bias.grad());
  }
  Check c{std::stod(arg("tol", "1e-12"))};
  const char* names[] = {"loss", "d_image", "d_text", "d_scale", "d_bias"};
  for (std::size_t i = 0; i < result[0].size(); ++i)
    c.add(names[i], max_abs(result[0][i], result[1][i]));
  return c.finish("chunked");
}

// OpenCLIP's DistillClipLoss across ranks (the teacher's features, of another width, gathered like
// the student's): the mean of the ranks' contrastive + distill terms and the averaged gradients
// equal one process on the concatenated batch.
int run_distill(ProcessGroup& pg) {
  const int w = pg.size(), r = pg.rank();
  const long b = arg_i("batch", 4), d = arg_i("dim", 8), dt = 5;
  const auto cfg = loss_config();
  const Features all = global_features(4321, w * b, d);
  const auto opt = all.img.options();
  const at::Tensor t_img_all = normalize(at::randn({w * b, dt}, opt));
  const at::Tensor t_txt_all = normalize(at::randn({w * b, dt}, opt));
  const at::Tensor t_scale = at::full({}, 30.0, opt);
  auto total = [](const clipper::loss::DistillTerms& t) { return t.contrastive + t.distill; };

  auto mine = loss_leaves(all, r * b, b, false);
  clipper::loss::ClipLoss loss_fn(borrowed(pg), cfg);
  at::Tensor loss =
      total(loss_fn.forward_distill(mine.img, mine.txt, mine.scale, t_img_all.narrow(0, r * b, b),
                                    t_txt_all.narrow(0, r * b, b), t_scale));
  loss.backward();

  ProcessGroup single;
  clipper::loss::ClipLoss ref_fn(borrowed(single), cfg);
  auto whole = loss_leaves(all, 0, w * b, false);
  at::Tensor ref = total(
      ref_fn.forward_distill(whole.img, whole.txt, whole.scale, t_img_all, t_txt_all, t_scale));
  ref.backward();

  Check c{tolerance()};
  c.add("loss", mean_over_ranks_diff(pg, loss, ref));
  c.add("d_image", max_abs(mine.img.grad() / w, whole.img.grad().narrow(0, r * b, b)));
  c.add("d_text", max_abs(mine.txt.grad() / w, whole.txt.grad().narrow(0, r * b, b)));
  c.add("d_scale", mean_over_ranks_diff(pg, mine.scale.grad(), whole.scale.grad()));
  return c.finish("distill");
}

// The CLIP loss's value and this rank's gradients, for each (local_loss, gather_with_grad), on
// float64 features read from in=FILE (image [W*B, D], text [W*B, D], logit_scale): written to
// out/clipper_l<L>g<G>_rank<R>.bin as loss, d image [B, D], d text [B, D], d scale, for
// tests/dist/openclip_dist_loss.py's figures to be compared with.
int run_clip_grads(ProcessGroup& pg) {
  const int w = pg.size(), r = pg.rank();
  const long b = arg_i("batch", 4), d = arg_i("dim", 8);
  const auto opt = at::TensorOptions().dtype(at::kDouble);
  auto in = at::empty({2 * w * b * d + 1}, opt);
  std::ifstream f(arg("in", ""), std::ios::binary);
  f.read(reinterpret_cast<char*>(in.data_ptr<double>()), in.numel() * sizeof(double));
  if (!f) {
    report("error: cannot read " + std::to_string(in.numel()) +
           " doubles from in=" + arg("in", ""));
    return 1;
  }
  const auto img_all = in.narrow(0, 0, w * b * d).view({w * b, d});
  const auto txt_all = in.narrow(0, w * b * d, w * b * d).view({w * b, d});
  for (const bool local : {false, true})
    for (const bool grad : {false, true}) {
      auto cfg = loss_config();
      cfg.local_loss = local;
      cfg.gather_with_grad = grad;
      auto img = img_all.narrow(0, r * b, b).clone().requires_grad_(true);
      auto txt = txt_all.narrow(0, r * b, b).clone().requires_grad_(true);
      auto scale = in.narrow(0, 2 * w * b * d, 1).reshape({}).clone().requires_grad_(true);
      auto loss = clipper::loss::make_loss(cfg, borrowed(pg))->forward(img, txt, scale, {});
      loss.backward();
      const auto outv = at::cat({loss.detach().reshape(1), img.grad().reshape(-1),
                                 txt.grad().reshape(-1), scale.grad().reshape(1)})
                            .contiguous();
      const std::string name = g_out + "/clipper_l" + std::to_string(local) + "g" +
                               std::to_string(grad) + "_rank" + std::to_string(r) + ".bin";
      std::ofstream(name, std::ios::binary)
          .write(reinterpret_cast<const char*>(outv.data_ptr<double>()),
                 outv.numel() * sizeof(double));
    }
  report("OK clip_grads");
  return 0;
}

// --- training step -----------------------------------------------------------------------------
// Two Linear towers and the logit scale (and bias), in fp64 by default.
struct TinyModel {
  std::vector<at::Tensor> params;  // w_img, b_img, w_txt, b_txt, logit_scale, logit_bias
  TinyModel(std::uint64_t seed, long din_img, long din_txt, long d, at::TensorOptions opt) {
    at::manual_seed(seed);
    params = {at::randn({d, din_img}, opt) * 0.3,    at::randn({d}, opt) * 0.1,
              at::randn({d, din_txt}, opt) * 0.3,    at::randn({d}, opt) * 0.1,
              at::full({}, std::log(1 / 0.07), opt), at::full({}, -5.0, opt)};
    for (auto& p : params) p.requires_grad_(true);
  }
  at::Tensor loss(clipper::loss::ContrastiveLoss& fn, const at::Tensor& x_img,
                  const at::Tensor& x_txt) {
    auto fi = normalize(at::linear(x_img, params[0], params[1]));
    auto ft = normalize(at::linear(x_txt, params[2], params[3]));
    return fn.forward(fi, ft, params[4].exp(), params[5]);
  }
  void sgd(double lr) {
    at::NoGradGuard g;
    for (auto& p : params) {
      if (!p.grad().defined()) continue;  // CLIP leaves logit_bias alone
      p.sub_(p.grad(), lr);
      p.mutable_grad().zero_();
    }
  }
};

int run_train(ProcessGroup& pg_ref, const std::shared_ptr<ProcessGroup>& pg) {
  const int w = pg->size(), r = pg->rank();
  const long b = arg_i("batch", 4), din_i = 12, din_t = 10, d = 8;
  const long steps = arg_i("steps", 2);
  const double lr = 0.5;
  const auto opt = at::TensorOptions().dtype(dtype());
  auto cfg = loss_config();

  // Every rank starts from its own random init; the broadcast makes rank 0's everyone's.
  TinyModel model(100 + 17 * r, din_i, din_t, d, opt);
  clipper::dist::broadcast_tensors(model.params, *pg, 0, arg_d("bucket_mb", 25.0));
  // The reducer gets the parameters the loss uses (CLIP has no logit_bias): with overlap, a
  // parameter that never gets a gradient would hold its bucket back until finish().
  std::vector<at::Tensor> trained(
      model.params.begin(),
      model.params.end() - (cfg.kind == clipper::config::LossKind::clip ? 1 : 0));
  clipper::dist::GradReducer reducer(trained, pg, arg_d("bucket_mb", 25.0),
                                     arg("overlap", "1") == "1");
  auto loss_fn = clipper::loss::make_loss(cfg, pg);

  ProcessGroup single;
  TinyModel ref(100, din_i, din_t, d, opt);
  auto ref_loss_fn = clipper::loss::make_loss(cfg, borrowed(single));

  Check c{tolerance()};
  std::size_t by_hooks = 0;
  // accum > 1: micro-batches whose backward passes only accumulate, then one that completes
  // the step (begin_step() before it); the reference accumulates the same global micro-batches.
  const long accum = arg_i("accum", 1);
  for (long step = 0; step < steps; ++step) {
    for (long m = 0; m < accum; ++m) {
      at::manual_seed(5000 + 100 * step + m);
      const at::Tensor x_img = at::randn({w * b, din_i}, opt),
                       x_txt = at::randn({w * b, din_t}, opt);
      if (m == accum - 1) reducer.begin_step();
      auto loss = model.loss(*loss_fn, x_img.narrow(0, r * b, b), x_txt.narrow(0, r * b, b));
      loss.backward();
      auto ref_loss = ref.loss(*ref_loss_fn, x_img, x_txt);
      ref_loss.backward();
      auto mean_loss = loss.detach().clone();
      pg->all_reduce(mean_loss);
      c.add("loss" + std::to_string(step) + "." + std::to_string(m),
            max_abs(mean_loss / w, ref_loss.detach()));
    }
    reducer.finish();
    by_hooks += reducer.launched_by_hooks();
    model.sgd(lr);
    ref.sgd(lr);
  }
  for (std::size_t i = 0; i < model.params.size(); ++i)
    c.add("param" + std::to_string(i), max_abs(model.params[i].detach(), ref.params[i].detach()));
  // Overlap must have launched buckets from the hooks, during backward.
  if (w > 1 && arg("overlap", "1") == "1" && by_hooks == 0)
    c.add("no_bucket_launched_by_hooks", 1.0);
  c.text << " buckets=" << reducer.num_buckets() << " by_hooks=" << by_hooks;
  (void)pg_ref;
  return c.finish("train");
}

// --- ZeRO: TrainStep with dist.zero = Z equals dist.zero = 0 ----------------------------------
// A small ViT CLIP (a few tens of thousands of parameters) in fp64 by default; model=rn: a small
// ModifiedResNet CLIP (BatchNorm buffers, convolutions, an attention pool).
clipper::model::ModelSpec zero_spec() {
  auto s = clipper::model::load_model_spec(arg("model", "vit") == "rn" ? "tiny-rn" : "tiny-vit");
  s.embed_dim = 16;
  s.image_size = 8;
  s.vision_width = 32;
  s.vision_layers = 2;
  s.patch_size = 4;
  s.vision_head_width = 16;
  s.context_length = 8;
  s.vocab_size = 64;
  s.text_width = 32;
  s.text_heads = 2;
  s.text_layers = 2;
  if (s.is_resnet()) {  // 32 x 32 images: 1 x 1 at the attention pool
    s.image_size = 32;
    s.vision_width = 8;
  }
  return s;
}

std::unique_ptr<clipper::train::TrainStep> make_zero_step(const std::shared_ptr<ProcessGroup>& pg,
                                                          int zero) {
  const auto spec = zero_spec();
  auto model = clipper::model::create_model(spec, 11);
  const std::string lock = arg("lock", "none");
  if (lock == "image") model->lock_image_tower(0);
  if (lock == "text") model->lock_text_tower(0);
  if (arg("ckpt", "0") == "1") model->set_grad_checkpointing(true);
  model->to(dtype());
  clipper::train::StepConfig cfg;
  cfg.optim.weight_decay = 0.2;
  cfg.optim.grad_clip_norm = arg_d("clip", 0.0);
  cfg.bucket_mb = arg_d("bucket_mb", 0.01);
  cfg.overlap_grad_reduce = arg("overlap", "1") == "1";
  cfg.zero = zero;
  cfg.ema.decay = arg_d("ema", 0.0);
  cfg.prefetch =
      arg("prefetch", "0") == "1" ? clipper::config::Prefetch::on : clipper::config::Prefetch::off;
  return std::make_unique<clipper::train::TrainStep>(model, pg, cfg, at::kCPU,
                                                     clipper::train::StepOptions{});
}

// This rank's part of step `step`'s global batch; rank 1 (or 0 alone) gets a NaN image at
// nan_step, which poisons the step on every rank.
clipper::train::MicroBatch zero_batch(int w, int r, long step) {
  const auto spec = zero_spec();
  const long b = arg_i("batch", 4);
  at::manual_seed(9000 + step);
  auto images = at::randn({w * b, 3, spec.image_size, spec.image_size}, dtype());
  auto tokens = at::randint(1, spec.vocab_size - 1, {w * b, spec.context_length}, at::kLong);
  tokens.select(1, 5).fill_(spec.vocab_size - 1);
  clipper::train::MicroBatch m{images.narrow(0, r * b, b).clone(),
                               tokens.narrow(0, r * b, b).clone()};
  if (step == arg_i("nan_step", -1) && r == std::min(1, w - 1)) m.images[0].fill_(std::nan(""));
  return m;
}

// `m` cut into accum=N micro-batches (one without accumulation).
std::vector<clipper::train::MicroBatch> micro_batches(const clipper::train::MicroBatch& m) {
  const long n = arg_i("accum", 1), b = m.images.size(0) / n;
  std::vector<clipper::train::MicroBatch> out;
  for (long j = 0; j < n; ++j)
    out.push_back({m.images.narrow(0, j * b, b), m.tokens.narrow(0, j * b, b)});
  return out;
}

// Each parameter's moments in a FlatShards, NaN where this rank's shard holds none of them.
std::map<std::string, at::Tensor> moments_by_param(const clipper::optim::FlatShards& f) {
  std::map<std::string, at::Tensor> tensors, out;
  for (const auto& [n, t] : f.tensors) tensors[n] = t;
  std::map<std::string, std::int64_t> numel;
  const auto& buckets = f.json.at("buckets");
  for (const auto& b : buckets)
    for (const auto& g : b.at("segments"))
      numel[g.at(0).get<std::string>()] =
          std::max(numel[g.at(0).get<std::string>()],
                   g.at(1).get<std::int64_t>() + g.at(3).get<std::int64_t>());
  for (std::size_t k = 0; k < buckets.size(); ++k)
    for (const char* what : {"exp_avg", "exp_avg_sq"})
      for (const auto& g : buckets[k].at("segments")) {
        const auto name = g.at(0).get<std::string>() + "." + what;
        if (!out.count(name))
          out[name] = at::full({numel[g.at(0).get<std::string>()]}, std::nan(""), at::kDouble);
        const auto src = tensors.at(std::string(what) + "." + std::to_string(k)).to(at::kDouble);
        out[name]
            .narrow(0, g.at(1).get<std::int64_t>(), g.at(3).get<std::int64_t>())
            .copy_(src.narrow(0, g.at(2).get<std::int64_t>(), g.at(3).get<std::int64_t>()));
      }
  return out;
}

// The largest difference where both hold a moment (1 if they share none).
double moments_diff(const clipper::optim::FlatShards& a, const clipper::optim::FlatShards& b) {
  const auto ma = moments_by_param(a), mb = moments_by_param(b);
  double worst = 0;
  std::int64_t shared = 0;
  for (const auto& [name, t] : ma) {
    const auto it = mb.find(name);
    if (it == mb.end()) continue;
    const std::int64_t n = std::max(t.numel(), it->second.numel());  // NaN beyond a's or b's
    const auto x = at::constant_pad_nd(t, {0, n - t.numel()}, std::nan(""));
    const auto y = at::constant_pad_nd(it->second, {0, n - it->second.numel()}, std::nan(""));
    const auto both = at::logical_and(at::isfinite(x), at::isfinite(y));
    shared += both.sum().item<std::int64_t>();
    if (both.any().item<bool>())
      worst = std::max(worst, max_abs(x.masked_select(both), y.masked_select(both)));
  }
  return shared > 0 ? worst : 1.0;
}

double same_or_both_nan(double a, double b) {
  if (std::isnan(a) && std::isnan(b)) return 0.0;
  return std::abs(a - b);
}

// The bytes of CPU memory held, counted by an allocator in front of the default one (installed
// before anything is allocated, so the parameters' storage uses it too): what the export holds
// at its peak, measured whatever gathers it.
struct CountingAllocator final : c10::Allocator {
  c10::Allocator* base = nullptr;
  std::atomic<std::int64_t> now{0}, peak{0};
  struct Held {
    c10::DataPtr inner;
    std::int64_t bytes;
  };
  static void release(void* p);
  c10::DataPtr allocate(std::size_t n) override {
    auto inner = base->allocate(n);
    void* data = inner.get();
    const auto device = inner.device();
    const std::int64_t held = now += static_cast<std::int64_t>(n);
    for (auto p = peak.load(); held > p && !peak.compare_exchange_weak(p, held);) {
    }
    return {data, new Held{std::move(inner), static_cast<std::int64_t>(n)}, &release, device};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }
};
CountingAllocator g_counting;
void CountingAllocator::release(void* p) {
  auto* h = static_cast<Held*>(p);
  g_counting.now -= h->bytes;
  delete h;
}

// The trainable parameters' names and tensors of a step's model.
struct Trainable {
  std::vector<std::string> names;
  std::vector<at::Tensor> params;
};
Trainable trainable(clipper::train::TrainStep& s) {
  Trainable t;
  for (const auto& p : s.model()->named_parameters())
    if (p.value().requires_grad()) {
      t.names.push_back(p.key());
      t.params.push_back(p.value());
    }
  return t;
}

// The averages of zero 3 (swapped in, gathered) against zero 0's, the weights put back exactly,
// and each rank holding 1/W of the parameters' average (its shards, padding aside).
void check_ema(clipper::train::TrainStep& ref, clipper::train::TrainStep& z, int w, Check& c) {
  std::map<std::string, at::Tensor> want;
  for (const auto& [n, t] : ref.ema()->named()) want[n] = t;
  const auto before = z.parameter_shards();
  double worst = 0;
  std::int64_t compared = 0;
  {
    const clipper::train::AveragedWeights averaged(z, true);
    const clipper::train::WholeParameters whole(z);
    for (const auto& [n, t] : z.model()->state_dict()) {
      const auto it = want.find(n);
      if (it == want.end()) continue;
      worst = std::max(worst, max_abs(t, it->second));
      ++compared;
    }
  }
  c.add("ema", compared == static_cast<std::int64_t>(want.size()) ? worst : 1.0);
  if (before) {
    const auto after = z.parameter_shards();
    for (std::size_t k = 0; k < before->tensors.size(); ++k)
      if (!at::equal(before->tensors[k].second, after->tensors[k].second))
        c.add("weights_not_restored_after_average", 1.0);
  }
  // Memory: zero 3's average is this rank's shard of every unit.
  const auto t = trainable(z);
  const auto units = clipper::dist::unit_layout(t.params, t.names, w);
  std::int64_t padded = 0;
  for (std::size_t k = 0; k < units.buckets.size(); ++k)
    padded += units.shard_numel(k) * w *
              static_cast<std::int64_t>(c10::elementSize(units.buckets[k].dtype));
  const std::int64_t mine = z.ema()->parameter_bytes(), whole = ref.ema()->parameter_bytes();
  if (z.zero() == 3 && mine * w != padded) c.add("ema_bytes_not_one_wth", 1.0);
  c.text << " ema_param_bytes zero0=" << whole << " zero" << z.zero() << "=" << mine;
}

// A streamed export (every rank reads, rank 0 writes into `dir`), with the most CPU bytes held
// beyond those held before it.
std::int64_t streamed_export(clipper::train::TrainStep& z, const std::string& dir, bool average) {
  const clipper::train::AveragedWeights averaged(z, average);
  const std::int64_t base = g_counting.now.load();
  g_counting.peak = base;
  z.read_parameters([&] {
    clipper::io::export_openclip_streamed(*z.model(), z.model()->spec(), dir, g_rank == 0);
  });
  return g_counting.peak.load() - base;
}

// export=1: zero 3's export and export of the average, streamed: their tensors equal zero 0's
// weights and average, and no rank ever held more than its two largest units and one tensor
// beyond what it held before (the whole model is never gathered).
void check_export(clipper::train::TrainStep& ref, clipper::train::TrainStep& z, int w, Check& c) {
  const std::string dir = g_out + "/export-zero" + std::to_string(z.zero());
  const std::int64_t extra = std::max(streamed_export(z, dir, false),
                                      streamed_export(z, dir + "-ema", z.ema() != nullptr));
  const auto t = trainable(z);
  const auto units = clipper::dist::unit_layout(t.params, t.names, w);
  std::vector<std::int64_t> unit_bytes;
  std::int64_t whole = 0, largest_tensor = 0;
  for (const auto& b : units.buckets) {
    unit_bytes.push_back(b.padded * static_cast<std::int64_t>(c10::elementSize(b.dtype)));
    whole += unit_bytes.back();
  }
  for (const auto& p : t.params)
    largest_tensor = std::max<std::int64_t>(largest_tensor, p.nbytes());
  std::sort(unit_bytes.rbegin(), unit_bytes.rend());
  // Two units whole, Gloo's flat copy of the one being gathered (its all-gather receives into a
  // temporary of the unit's size, then copies), one tensor on its way to the file.
  const std::int64_t bound = 2 * unit_bytes.at(0) + unit_bytes.at(1) + largest_tensor;
  c.text << " export_extra_bytes=" << extra << " bound=" << bound << " whole=" << whole
         << " largest_units=" << unit_bytes.at(0) << "," << unit_bytes.at(1);
  if (extra > bound || extra >= whole) c.add("export_held_more_than_two_units", 1.0);
  if (g_rank != 0) return;
  std::map<std::string, at::Tensor> weights, average;
  for (const auto& [n, v] : ref.model()->state_dict()) weights[n] = v;
  average = weights;
  if (ref.ema())
    for (const auto& [n, v] : ref.ema()->named()) average[n] = v;
  double worst = 0;
  for (const auto& [file, want] :
       {std::make_pair(dir, &weights), std::make_pair(dir + "-ema", &average)})
    for (const auto& [n, v] : clipper::io::load_safetensors(file + "/open_clip_model.safetensors"))
      worst = std::max(worst, max_abs(v, want->at(n)));
  c.add("export", worst);
}

int run_zero(const std::shared_ptr<ProcessGroup>& pg) {
  const int w = pg->size(), r = pg->rank();
  const int zero = static_cast<int>(arg_i("zero", 1));
  auto ref = make_zero_step(pg, 0);
  auto z = make_zero_step(pg, zero);
  Check c{dtype() == at::kDouble ? 1e-12 : arg_d("tol", 1e-5)};
  long skipped = 0, clipped = 0;
  for (long step = 0; step < arg_i("steps", 10); ++step) {
    const auto m = zero_batch(w, r, step);
    const double lr = 1e-3 * (1 + step % 3);
    const auto a = ref->run(micro_batches(m), lr), b = z->run(micro_batches(m), lr);
    c.add("loss" + std::to_string(step), same_or_both_nan(a.loss, b.loss));
    // The norm relative to its size (it is tens here; fp32 sums it in another order).
    c.add("norm" + std::to_string(step),
          same_or_both_nan(a.grad_norm, b.grad_norm) / std::max(1.0, std::abs(a.grad_norm)));
    if (a.skipped != b.skipped) c.add("skip_mismatch" + std::to_string(step), 1.0);
    skipped += a.skipped ? 1 : 0;
    clipped += a.grad_norm > arg_d("clip", 0.0) ? 1 : 0;
  }
  // Between steps full sharding keeps no parameter whole: each rank holds its shards only.
  const auto pa = ref->model()->named_parameters(), pb = z->model()->named_parameters();
  std::int64_t whole_between_steps = 0;
  for (const auto& p : pb)
    if (p.value().requires_grad() && p.value().storage().nbytes() > 0) ++whole_between_steps;
  if (zero == 3 && whole_between_steps > 0)
    c.add("whole_params_between_steps", static_cast<double>(whole_between_steps));
  const auto counters = z->sharding_counters();
  if (arg("prefetch", "0") == "1" && counters.prefetched == 0) c.add("never_prefetched", 1.0);
  double worst = 0;
  {
    const clipper::train::WholeParameters whole(*z);
    for (std::size_t i = 0; i < pa.size(); ++i)
      worst = std::max(worst, max_abs(pa[i].value().detach(), pb[i].value().detach()));
  }
  c.add("params", worst);
  // The optimizer state: this rank's shard of the unsharded moments equals the sharded ones, per
  // parameter element both hold (zero 3's units lay the shards out differently).
  c.add("moments", moments_diff(ref->optimizer_shards(), z->optimizer_shards()));
  if (ref->ema()) check_ema(*ref, *z, w, c);
  if (arg("export", "0") == "1") check_export(*ref, *z, w, c);
  if (arg_i("nan_step", -1) >= 0 && skipped != 1) c.add("nan_step_not_skipped", 1.0);
  // Clipping must have acted (on a step the norm then scales every gradient).
  if (arg_d("clip", 0.0) > 0 && clipped == 0) c.add("clip_never_active", 1.0);
  c.text << " skipped=" << skipped << " clipped=" << clipped;
  c.text << " optimizer_bytes zero0=" << ref->optimizer_state_bytes() << " zero" << zero << "="
         << z->optimizer_state_bytes() << " peak_param_bytes zero0=" << ref->peak_parameter_bytes()
         << " zero" << zero << "=" << z->peak_parameter_bytes()
         << " resident_between_steps=" << counters.resident_parameter_bytes
         << " gathers=" << counters.gathers << " prefetched=" << counters.prefetched;
  // Full sharding holds less than the whole parameters at its peak within the step.
  // (peak_below=1; a tiny model on many ranks holds less in shards than in its two largest units).
  if (arg("peak_below", "0") == "1" && z->peak_parameter_bytes() >= ref->peak_parameter_bytes())
    c.add("zero3_peak_not_below_whole", 1.0);
  return c.finish("zero");
}

// --- resume on another world size: the optimizer state is re-split ------------------------------
// phase=save: `before` steps on this world size with zero=Z, then a checkpoint in dir=DIR (the
// trainer's own model, parameter-shard and optimizer parts: with zero 3 each rank saves its
// parameter shards, nothing is gathered). phase=load: any world size and stage loads it and runs
// steps `before`..`steps`-1. The global batch (global=G pairs) is the same for every world size,
// so both phases together must equal one process that ran every step on the whole batch.
// The checkpoint parts of a step: the trainer's model, parameter-shard and optimizer parts, and
// with ema=D its average's (whole and per rank).
struct StepParts {
  clipper::trainer::ModelParts model;
  std::unique_ptr<clipper::checkpoint::Stateful> optimizer;
  clipper::trainer::EmaParts ema;
  clipper::checkpoint::Parts parts;
  explicit StepParts(clipper::train::TrainStep& z)
      : model(clipper::trainer::make_model_parts(z.model(), z)),
        optimizer(clipper::trainer::make_optimizer_part(z)) {
    using clipper::checkpoint::Scope;
    parts = {{"model", Scope::global, model.whole.get()},
             {"params", Scope::per_rank, model.shards.get()},
             {"optimizer", Scope::per_rank, optimizer.get()}};
    if (!z.ema()) return;
    ema = clipper::trainer::make_ema_parts(*z.ema());
    parts.push_back({"ema", Scope::global, ema.whole.get()});
    parts.push_back({"ema_shards", Scope::per_rank, ema.shards.get()});
  }
};

bool same_shards(const std::optional<clipper::optim::FlatShards>& a,
                 const std::optional<clipper::optim::FlatShards>& b) {
  if (!a || !b) return !a && !b;
  if (a->tensors.size() != b->tensors.size()) return false;
  for (std::size_t k = 0; k < a->tensors.size(); ++k)
    if (!at::equal(a->tensors[k].second, b->tensors[k].second)) return false;
  return true;
}

// The checkpoint just saved, loaded into a fresh step of the same world size and stage, gives
// back this rank's parameter shards and average (its shards with zero 3) bit for bit.
bool reloads_bit_identically(const std::shared_ptr<ProcessGroup>& pg, clipper::train::TrainStep& z,
                             const clipper::checkpoint::Manager& manager) {
  auto fresh = make_zero_step(pg, z.zero());
  StepParts sp(*fresh);
  manager.load(manager.latest_valid().value().dir, sp.parts);
  bool ok = same_shards(z.parameter_shards(), fresh->parameter_shards());
  if (z.ema()) {
    ok = ok && same_shards(z.ema()->shards(), fresh->ema()->shards()) &&
         z.ema()->updates() == fresh->ema()->updates();
    for (const auto& [n, t] : z.ema()->named())
      for (const auto& [m, u] : fresh->ema()->named()) ok = ok && (n != m || at::equal(t, u));
  }
  if (!ok) report("FAIL reshard: the reloaded parameter shards or average differ");
  return ok;
}

int run_reshard(const std::shared_ptr<ProcessGroup>& pg) {
  const int w = pg->size(), r = pg->rank();
  const long global = arg_i("global", 8), before = arg_i("before", 5), steps = arg_i("steps", 10);
  g_args["batch"] = std::to_string(global / w);
  const bool save = arg("phase", "save") == "save";
  auto z = make_zero_step(pg, static_cast<int>(arg_i("zero", 0)));
  StepParts sp(*z);
  const auto& parts = sp.parts;
  clipper::checkpoint::Manager manager(arg("dir", ""), {}, pg);
  if (!save) manager.load(manager.latest_valid().value().dir, parts);
  std::vector<double> losses;
  for (long step = save ? 0 : before; step < (save ? before : steps); ++step) {
    const auto res = z->run({zero_batch(w, r, step)}, 1e-3 * (1 + step % 3));
    losses.push_back(res.loss);
  }
  if (save) {
    const std::int64_t gathers = z->sharding_counters().gathers;
    manager.save(before, parts, "");
    // Zero 3 saves without a gather: model.json lists the parameters the ranks saved.
    const auto saved = manager.latest_valid().value().dir;
    const bool listed = std::filesystem::exists(saved + "/model.json");
    if (z->zero() == 3 && (!listed || z->sharding_counters().gathers != gathers)) {
      report("FAIL reshard: zero 3 gathered for the save or listed no sharded parameters");
      return 3;
    }
    if (!reloads_bit_identically(pg, *z, manager)) return 3;
    report("OK reshard saved step " + std::to_string(before) + " from " + std::to_string(w) +
           " ranks, optimizer_bytes=" + std::to_string(z->optimizer_state_bytes()) +
           (listed ? ", parameters saved as shards" : ""));
    return 0;
  }
  // The reference: one process, zero 0, every step on the global batch.
  ProcessGroup single_pg;
  g_args["batch"] = std::to_string(global);
  auto ref = make_zero_step(borrowed(single_pg), 0);
  Check c{dtype() == at::kDouble ? 1e-10 : arg_d("tol", 1e-4)};
  for (long step = 0; step < steps; ++step) {
    const auto a = ref->run({zero_batch(1, 0, step)}, 1e-3 * (1 + step % 3));
    if (step >= before)
      c.add("loss" + std::to_string(step), std::abs(a.loss - losses[step - before]));
  }
  const auto pa = ref->model()->named_parameters(), pb = z->model()->named_parameters();
  double worst = 0;
  {
    const clipper::train::WholeParameters whole(*z);
    for (std::size_t i = 0; i < pa.size(); ++i)
      worst = std::max(worst, max_abs(pa[i].value().detach(), pb[i].value().detach()));
  }
  c.add("params", worst);
  if (ref->ema()) {  // the average, re-split (or cut, or assembled) on load
    std::map<std::string, at::Tensor> mine;
    {
      const clipper::train::AveragedWeights averaged(*z, true);
      const clipper::train::WholeParameters whole_avg(*z);
      for (const auto& [n, t] : z->model()->state_dict()) mine[n] = t.clone();
    }
    double ema = 0;
    for (const auto& [n, t] : ref->ema()->named()) ema = std::max(ema, max_abs(t, mine.at(n)));
    c.add("ema", ema);
  }
  return c.finish("reshard");
}

// --- a checkpoints folder that is not shared between the ranks (issue 24 item 1) ----------------
// Each rank's run folder is dir=DIR/rank<R>, as with a relative train.output_dir on nodes started
// in different working folders. mode=probe: Manager::check_shared must fail on every rank, naming
// both folders. mode=commit (no probe): the save must fail on every rank and commit nothing, since
// rank 0 does not see rank 1's files.
class JsonPart : public clipper::checkpoint::Stateful {
 public:
  explicit JsonPart(nlohmann::json j) : j_(std::move(j)) {}
  clipper::checkpoint::PartState state() const override { return {{}, j_}; }
  void load_state(const clipper::checkpoint::PartState& s, const std::string&) override {
    j_ = s.json;
  }

 private:
  nlohmann::json j_;
};

int run_unshared(const std::shared_ptr<ProcessGroup>& pg) {
  const std::string run = arg("dir", "") + "/rank" + std::to_string(pg->rank());
  clipper::checkpoint::Manager manager(run, {}, pg);
  const bool probe = arg("mode", "probe") == "probe";
  JsonPart model(nlohmann::json{{"w", 1}}), loader(nlohmann::json{{"position", pg->rank()}});
  const clipper::checkpoint::Parts parts{{"model", clipper::checkpoint::Scope::global, &model},
                                         {"loader", clipper::checkpoint::Scope::per_rank, &loader}};
  try {
    if (probe)
      manager.check_shared();
    else
      manager.save(1, parts, "");
  } catch (const std::exception& e) {
    std::string one_line = e.what();
    for (auto& c : one_line)
      if (c == '\n') c = ' ';
    report("OK unshared " + arg("mode", "probe") + ": " + one_line);
    return 0;
  }
  report("FAIL unshared: " + std::string(probe ? "the probe passed" : "the save committed"));
  return 3;
}

// --- failures ----------------------------------------------------------------------------------
int run_failure(ProcessGroup& pg, bool die) {
  const int victim = static_cast<int>(arg_i("victim", 1));
  const long after = arg_i("after", 3);
  for (long step = 0; step < 1000000; ++step) {
    if (pg.rank() == victim && step == after) {
      report(die ? "dying" : "stalling");
      if (die) ::raise(SIGKILL);
      std::this_thread::sleep_for(std::chrono::seconds(arg_i("stall_s", 120)));
      return 0;
    }
    at::Tensor t = at::ones({1024});
    pg.all_reduce(t, ReduceOp::sum, "all_reduce of step " + std::to_string(step));
  }
  return 0;
}

volatile std::sig_atomic_t g_signal = 0;
void on_signal(int s) {
  g_signal = s;
}

int run_wait_signal() {
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  std::signal(SIGUSR1, on_signal);
  report("ready pid=" + std::to_string(::getpid()));
  for (int i = 0; i < 3000 && !g_signal; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  report("got signal " + std::to_string(static_cast<int>(g_signal)));
  return g_signal ? static_cast<int>(arg_i("code", 0)) : 4;
}

// A rank that ignores SIGINT, SIGTERM and SIGUSR1 (as one stuck in a collective would, for the
// launcher) and has a child in its process group; it watches its launcher as `clipper` does.
int run_ignore_stop() {
  clipper::dist::watch_launcher();
  for (int sig : {SIGTERM, SIGINT, SIGUSR1}) std::signal(sig, SIG_IGN);
  const pid_t child = ::fork();
  if (child == 0) {
    for (int i = 0; i < 600; ++i) ::sleep(1);
    ::_exit(0);
  }
  report("ready pid=" + std::to_string(::getpid()) + " child=" + std::to_string(child));
  std::this_thread::sleep_for(std::chrono::seconds(60));
  report("was not stopped");
  return 4;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: dist_worker SCENARIO [key=value ...]\n";
    return 2;
  }
  const std::string scenario = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    const auto eq = a.find('=');
    if (eq != std::string::npos) g_args[a.substr(0, eq)] = a.substr(eq + 1);
  }
  g_out = arg("out", "");
  if (arg("export", "0") == "1") {  // before anything is allocated
    g_counting.base = c10::GetDefaultCPUAllocator();
    c10::SetCPUAllocator(&g_counting, /*priority=*/1);
  }
  try {
    clipper::config::DistConfig dc;
    dc.timeout_s = arg_d("timeout", 30.0);
    dc.start_timeout_s = arg_d("start_timeout", 60.0);
    const auto world = clipper::dist::discover_world(dc);
    g_rank = world.rank;
    if (scenario == "wait_signal") return run_wait_signal();
    if (scenario == "ignore_stop") return run_ignore_stop();
    if (scenario == "exit") {
      if (world.rank == static_cast<int>(arg_i("rank", 1))) {
        report("exiting with " + arg("code", "7"));
        return static_cast<int>(arg_i("code", 7));
      }
      std::this_thread::sleep_for(std::chrono::seconds(60));
      report("was not stopped");
      return 0;
    }
    at::set_num_threads(1);
    auto pg = ProcessGroup::create(world, dc, /*use_cuda=*/false);
    if (scenario == "hello") {
      // The small agreements the training loop relies on.
      const auto w = static_cast<std::int64_t>(world.world_size);
      const auto sum = pg->all_reduce_int(world.rank + 1, ReduceOp::sum);
      const bool ok =
          sum == w * (w + 1) / 2 && pg->all_reduce_max_int(world.rank) == w - 1 &&
          pg->all_reduce_min_int(10 + world.rank) == 10 && pg->any(world.rank == 1) &&
          !pg->any(false) && !pg->all(world.rank == 0) && pg->all(true) &&
          pg->broadcast_string("run-of-rank-" + std::to_string(world.rank)) == "run-of-rank-0";
      pg->barrier();
      report((ok ? "OK hello " : "FAIL hello ") + world.describe() + " from " + world.source +
             " sum=" + std::to_string(sum));
      return ok ? 0 : 3;
    }
    if (scenario == "clip" || scenario == "siglip") return run_loss(*pg, scenario);
    if (scenario == "clip_grads") return run_clip_grads(*pg);
    if (scenario == "distill") return run_distill(*pg);
    if (scenario == "chunked") return run_chunked(*pg, arg("loss", "clip"));
    if (scenario == "train") return run_train(*pg, pg);
    if (scenario == "zero") return run_zero(pg);
    if (scenario == "reshard") return run_reshard(pg);
    if (scenario == "unshared") return run_unshared(pg);
    if (scenario == "die" || scenario == "stall") return run_failure(*pg, scenario == "die");
    report("error: unknown scenario " + scenario);
    return 2;
  } catch (const std::exception& e) {
    report(std::string("error: ") + e.what());
    return 1;
  }
}
