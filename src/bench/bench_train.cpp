#include "clipper/bench/bench_train.hpp"

#include <ATen/ATen.h>
#include <sys/resource.h>
#include <torch/cuda.h>

#include <chrono>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "clipper/config/config.hpp"
#include "clipper/core/error.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/model/flops.hpp"
#include "clipper/model/model_spec.hpp"
#include "clipper/model/naflex_size.hpp"
#include "clipper/session/session.hpp"
#include "clipper/train/step.hpp"

#ifdef CLIPPER_WITH_CUDA_ALLOCATOR_STATS
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <limits>

namespace clipper::bench {

using train::MicroBatch;
using train::StepConfig;
using train::StepOptions;
using train::TrainStep;
namespace {

using Clock = std::chrono::steady_clock;

double peak_memory_gib(bool cuda, int device_index) {
#ifdef CLIPPER_WITH_CUDA_ALLOCATOR_STATS
  if (cuda) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device_index);
    return static_cast<double>(stats.allocated_bytes[0].peak) / (1024.0 * 1024 * 1024);
  }
#endif
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / (1024.0 * 1024);  // ru_maxrss is in KiB
}

// Captures one whole training step (forward, loss, backward, NaN check, AdamW) in a CUDA graph
// and replays it `steps` times: the step without the host launching each kernel. Static batch,
// one rank, no read-back inside (the step issues no host synchronization, which capture needs);
// autocast's weight cache is off while capturing, as CUDA graphs require. Returns samples/s, or
// -1 with `error` set when capture fails.
double graph_samples_per_s(model::Clip model, const std::shared_ptr<dist::ProcessGroup>& pg,
                           const StepConfig& cfg, at::Device device, StepOptions so,
                           const std::vector<MicroBatch>& micro, std::int64_t steps,
                           std::string* error) {
#ifdef CLIPPER_WITH_CUDA_ALLOCATOR_STATS
  so.read_every = std::numeric_limits<std::int64_t>::max();
  so.time_phases = false;
  TrainStep step(std::move(model), pg, cfg, device, so);
  const bool cache = at::autocast::is_autocast_cache_enabled();
  at::autocast::set_autocast_cache_enabled(false);
  try {
    torch::cuda::synchronize();
    at::cuda::CUDAGraph graph;
    {
      c10::cuda::CUDAStreamGuard guard(c10::cuda::getStreamFromPool(false, device.index()));
      for (int i = 0; i < 3; ++i) step.run(micro, 1e-4);  // warm up on the capture stream
      torch::cuda::synchronize();
      graph.capture_begin();
      step.run(micro, 1e-4);
      graph.capture_end();
    }
    torch::cuda::synchronize();
    graph.replay();
    torch::cuda::synchronize();
    const auto t0 = Clock::now();
    for (std::int64_t i = 0; i < steps; ++i) graph.replay();
    torch::cuda::synchronize();
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    at::autocast::set_autocast_cache_enabled(cache);
    return static_cast<double>(micro[0].images.size(0) * steps) / secs;
  } catch (const std::exception& e) {
    at::autocast::set_autocast_cache_enabled(cache);
    *error = e.what();
    return -1;
  }
#else
  (void)model, (void)pg, (void)cfg, (void)device, (void)so, (void)micro, (void)steps;
  *error = "this build has no CUDA headers";
  return -1;
#endif
}

void choose_sdpa(const std::string& sdpa) {
  if (sdpa == "auto") return;
  if (sdpa != "math") throw core::InputError("--sdpa: expected auto or math, got '" + sdpa + "'");
  auto& ctx = at::globalContext();
  ctx.setSDPUseFlash(false);
  ctx.setSDPUseMemEfficient(false);
  ctx.setSDPUseCuDNN(false);
  ctx.setSDPUseMath(true);
}

// NaFlex: picture i has aspect ratio kRatios[i % 8] (height : width), resized under the token
// budget (mixed sizes: budget / 2^(i % 3)) as the loader does; its patches random, the rest of
// its slots zero.
void naflex_pictures(const model::ModelSpec& spec, std::int64_t batch, bool mixed_sizes,
                     at::Device device, MicroBatch& mb) {
  static const std::pair<std::int64_t, std::int64_t> kRatios[] = {{1, 1},  {3, 4}, {4, 3}, {9, 16},
                                                                  {16, 9}, {1, 2}, {2, 1}, {1, 4}};
  const auto p = spec.patch_size, n = spec.max_seq_len;
  auto grids = at::empty({batch, 2}, at::kLong);
  auto images = at::zeros({batch, n, p * p * 3}, at::kByte);
  for (std::int64_t i = 0; i < batch; ++i) {
    const auto [rh, rw] = kRatios[i % 8];
    const auto budget = mixed_sizes ? std::max<std::int64_t>(1, n >> (i % 3)) : n;
    const auto [h, w] = model::naflex_image_size(1200 * rh, 1200 * rw, p, budget);
    grids[i][0] = h / p;
    grids[i][1] = w / p;
    images[i].narrow(0, 0, (h / p) * (w / p)).random_(0, 256);
  }
  mb.images = images.to(device);
  mb.grids = grids.to(device);
}

// Synthetic, device-resident batches: random pixels, token rows ending in the end-of-text id.
std::vector<MicroBatch> synthetic_batch(const model::ModelSpec& spec, std::int64_t batch,
                                        bool naflex_mixed_sizes, at::Device device, int rank) {
  at::manual_seed(1234 + rank);
  const auto dev = at::TensorOptions().device(device);
  MicroBatch mb;
  if (spec.naflex_inputs())
    naflex_pictures(spec, batch, naflex_mixed_sizes, device, mb);
  else
    mb.images =
        at::randint(0, 256, {batch, spec.image_size, spec.image_size, 3}, dev.dtype(at::kByte));
  mb.tokens =
      at::randint(1, spec.vocab_size - 2, {batch, spec.context_length}, dev.dtype(at::kLong));
  mb.tokens.select(1, spec.context_length - 1).fill_(spec.vocab_size - 1);
  return {mb};
}

// Phase breakdown on a few extra steps, synchronizing between phases; with dist.zero 3 also the
// time spent waiting for parameter gathers (inside forward and backward).
void time_phases(TrainStep& step, const std::vector<MicroBatch>& micro, std::int64_t steps,
                 BenchResult& r) {
  step.set_time_phases(true);
  const double n = static_cast<double>(std::max<std::int64_t>(1, steps - 1));
  double waited = 0;
  for (std::int64_t i = 0; i < steps; ++i) {
    const double before = step.sharding_counters().gather_wait_s;
    const auto t = step.run(micro, 1e-4);
    if (i == 0 && steps > 1) continue;  // the first one settles the timing
    r.forward_ms += 1000 * t.forward_s / n;
    r.backward_ms += 1000 * t.backward_s / n;
    r.reduce_ms += 1000 * t.reduce_s / n;
    r.optimizer_ms += 1000 * t.optimizer_s / n;
    waited += step.sharding_counters().gather_wait_s - before;
  }
  r.gather_wait_ms = 1000 * waited / n;
  step.set_time_phases(false);
}

// What the trainable state costs this rank, as the step counted it in its last step.
void state_bytes(const TrainStep& step, BenchResult& r) {
  const auto c = step.sharding_counters();
  r.parameter_peak_bytes = static_cast<double>(c.peak_parameter_bytes);
  r.parameter_resident_bytes = static_cast<double>(c.resident_parameter_bytes);
  r.gradient_peak_bytes = static_cast<double>(c.peak_gradient_bytes);
  r.optimizer_bytes = static_cast<double>(step.optimizer_state_bytes());
}

config::Config bench_config(const BenchOptions& o) {
  config::Config cfg;
  cfg.model.name = o.model;
  cfg.model.grad_checkpointing = o.grad_checkpointing;
  cfg.train.device = o.device;
  cfg.train.precision = o.precision;
  cfg.train.threads = o.threads;
  cfg.train.batch_size = o.batch;
  cfg.optim.fused = o.fused_adamw;
  cfg.dist.zero = o.zero;
  cfg.dist.prefetch = o.prefetch;
  cfg.dist.gather_bf16 = o.gather_bf16;
  cfg.loss.chunked = o.chunked_loss;
  cfg.lora.rank = o.lora_rank;
  cfg.lora.alpha = o.lora_alpha;
  return cfg;
}

}  // namespace

BenchResult bench_train(const BenchOptions& o) {
  const config::Config cfg = bench_config(o);
  const StepConfig step_cfg = StepConfig::from(cfg);
  choose_sdpa(o.sdpa);
  const session::Session s = session::open_session(cfg);
  if (s.model->visual_naflex) s.model->visual_naflex->trunk->packing = o.naflex_packing;
  const bool cuda = s.device.is_cuda();
  StepOptions so;
  so.bf16 = s.bf16;
  so.read_every = o.sync_every > 0 ? o.sync_every : cuda ? 10 : 1;
  so.channels_last = o.channels_last && cuda;
  TrainStep step(s.model, s.pg, step_cfg, s.device, so);
  const auto micro = synthetic_batch(s.spec, o.batch, o.naflex_mixed_sizes, s.device, s.rank());
  auto sync = [&] {
    if (cuda) torch::cuda::synchronize();
  };
  for (std::int64_t i = 0; i < o.warmup; ++i) step.run(micro, 1e-4);
  sync();
  const auto payload0 = s.pg->payload().total();
  const auto t0 = Clock::now();
  for (std::int64_t i = 0; i < o.steps; ++i) step.run(micro, 1e-4);
  sync();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const double payload = static_cast<double>(s.pg->payload().total() - payload0);

  BenchResult r;
  r.model = s.spec.name;
  r.device = s.device.str();
  r.precision = s.bf16 ? "bf16" : "fp32";
  r.batch = o.batch;
  r.zero = o.zero;
  r.world_size = s.world_size();
  r.steps = o.steps;
  for (const auto& p : s.model->parameters()) {
    r.params += p.numel();
    if (p.requires_grad()) r.trainable_params += p.numel();
  }
  r.sync_every = so.read_every;
  r.step_ms = 1000.0 * secs / std::max<std::int64_t>(1, o.steps);
  r.payload_bytes_per_step = payload / static_cast<double>(std::max<std::int64_t>(1, o.steps));
  r.samples_per_s = static_cast<double>(o.batch * s.world_size() * o.steps) / secs;
  r.gflops_per_sample = 3.0 * model::forward_flops_per_sample(s.spec) / 1e9;
  const double peak = o.peak_tflops > 0 ? o.peak_tflops * 1e12 : (cuda ? 790e12 : 0.0);
  if (peak > 0) r.mfu = r.gflops_per_sample * 1e9 * r.samples_per_s / s.world_size() / peak;
  if (s.model->visual_naflex && s.spec.naflex_inputs()) {
    r.padded_share = s.model->visual_naflex->trunk->last_padded_share;
    r.run_padded_share = s.model->visual_naflex->trunk->last_run_padded_share;
  }
  state_bytes(step, r);
  time_phases(step, micro, o.breakdown_steps, r);
  r.peak_memory_gib = peak_memory_gib(cuda, s.device.index());
  if (o.cuda_graph) {
    if (!cuda) throw core::InputError("--cuda-graph needs --device cuda");
    if (s.world_size() > 1) throw core::InputError("--cuda-graph: one rank only");
    if (o.zero == 3) throw core::InputError("--cuda-graph: not with --zero 3");
    r.graph_samples_per_s =
        graph_samples_per_s(s.model, s.pg, step_cfg, s.device, so, micro, o.steps, &r.graph_error);
  }
  return r;
}

std::string BenchResult::to_json() const {
  nlohmann::ordered_json j = {{"model", model},
                              {"device", device},
                              {"precision", precision},
                              {"batch", batch},
                              {"world_size", world_size},
                              {"steps", steps},
                              {"sync_every", sync_every},
                              {"samples_per_s", samples_per_s},
                              {"step_ms", step_ms},
                              {"forward_ms", forward_ms},
                              {"backward_ms", backward_ms},
                              {"reduce_ms", reduce_ms},
                              {"optimizer_ms", optimizer_ms},
                              {"peak_memory_gib", peak_memory_gib},
                              {"payload_bytes_per_step", payload_bytes_per_step},
                              {"zero", zero},
                              {"gather_wait_ms", gather_wait_ms},
                              {"parameter_peak_bytes", parameter_peak_bytes},
                              {"parameter_resident_bytes", parameter_resident_bytes},
                              {"gradient_peak_bytes", gradient_peak_bytes},
                              {"optimizer_bytes", optimizer_bytes},
                              {"gflops_per_sample", gflops_per_sample},
                              {"params", params},
                              {"trainable_params", trainable_params},
                              {"mfu", mfu}};
  if (padded_share >= 0) {
    j["naflex_padded_share"] = padded_share;
    j["naflex_run_padded_share"] = run_padded_share;
  }
  if (graph_samples_per_s >= 0) j["cuda_graph_samples_per_s"] = graph_samples_per_s;
  if (!graph_error.empty()) j["cuda_graph_error"] = graph_error;
  return j.dump();
}

std::string BenchResult::to_text() const {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1);
  os << model << " | " << device << " " << precision << " | batch " << batch << " x " << world_size
     << " rank(s)\n";
  if (trainable_params != params)
    os << "  parameters: " << trainable_params / 1e6 << " M trainable of " << params / 1e6
       << " M\n";
  os << "  " << samples_per_s << " samples/s, " << step_ms << " ms/step over " << steps
     << " steps (loss read back every " << sync_every << ")\n";
  os << "  breakdown: forward " << forward_ms << " ms, backward " << backward_ms
     << " ms, reduce+check " << reduce_ms << " ms, optimizer " << optimizer_ms << " ms\n";
  if (zero == 3) os << "  of which waiting for parameter gathers " << gather_wait_ms << " ms\n";
  os << std::setprecision(2) << "  peak memory " << peak_memory_gib << " GiB, " << gflops_per_sample
     << " GFLOP/sample (training)";
  if (mfu >= 0) os << ", MFU " << std::setprecision(1) << 100 * mfu << " %";
  os << "\n";
  if (padded_share >= 0)
    os << std::setprecision(1) << "  NaFlex: " << 100 * padded_share
       << " % of the batch's sequence slots are padding, " << 100 * run_padded_share
       << " % as the blocks ran it\n";
  os << std::setprecision(1) << "  per rank (dist.zero " << zero << "): parameters "
     << parameter_peak_bytes / 1e6 << " MB at most (" << parameter_resident_bytes / 1e6
     << " MB between steps), gradients " << gradient_peak_bytes / 1e6
     << " MB at most, optimizer state " << optimizer_bytes / 1e6 << " MB\n";
  if (graph_samples_per_s >= 0)
    os << std::setprecision(1)
       << "  CUDA graph (whole step captured, replayed): " << graph_samples_per_s << " samples/s\n";
  if (!graph_error.empty()) os << "  CUDA graph capture failed: " << graph_error << "\n";
  return os.str();
}

}  // namespace clipper::bench
