#include "clipper/loop/run.hpp"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <torch/cuda.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <iomanip>
#include <sstream>

#include "clipper/checkpoint/checkpoint.hpp"
#include "clipper/config/loader.hpp"
#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/core/signals.hpp"
#include "clipper/core/text.hpp"
#include "clipper/data/loader.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/dist/world.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/loop/evaluate.hpp"
#include "clipper/model/flops.hpp"
#include "clipper/model/model_spec.hpp"
#include "clipper/optim/schedule.hpp"
#include "clipper/tokenizer/tokenizer.hpp"
#include "clipper/train/metrics.hpp"
#include "clipper/train/precision.hpp"
#include "clipper/train/step.hpp"

namespace fs = std::filesystem;

namespace clipper::loop {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string timestamp_name(std::int64_t epoch_seconds) {
  std::time_t t = static_cast<std::time_t>(epoch_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::ostringstream os;
  os << "run-" << std::put_time(&tm, "%Y%m%d-%H%M%S");
  return os.str();
}

at::Generator cuda_generator(const at::Device& d) {
  return at::globalContext().defaultGenerator(d);
}

// The state of this rank's random streams (the loader keeps its own in its state).
checkpoint::TensorList rng_state(const at::Device& device) {
  checkpoint::TensorList out;
  out.emplace_back("cpu_rng", at::detail::getDefaultCPUGenerator().get_state());
  if (device.is_cuda()) out.emplace_back("cuda_rng", cuda_generator(device).get_state());
  return out;
}

void set_rng_state(const checkpoint::TensorList& t, const at::Device& device) {
  for (const auto& [name, value] : t) {
    if (name == "cpu_rng") {
      auto gen = at::detail::getDefaultCPUGenerator();
      gen.set_state(value);
    }
    if (name == "cuda_rng" && device.is_cuda()) {
      auto gen = cuda_generator(device);
      gen.set_state(value);
    }
  }
}

}  // namespace

RunSummary run_training(const config::Config& cfg) {
  const auto started = Clock::now();
  RunSummary summary;
  core::install_stop_handlers();

  // --- World, device, process group ---------------------------------------------------------
  const dist::World world = dist::discover_world(cfg.dist);
  const bool cuda =
      cfg.train.device == "cuda" || (cfg.train.device == "auto" && torch::cuda::is_available());
  if (cuda && !torch::cuda::is_available())
    throw core::InputError("train.device is cuda but no CUDA device is available");
  const at::Device device =
      cuda ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(world.local_rank))
           : at::Device(at::kCPU);
  // bf16 autocast: by default on CUDA; on the CPU when asked (fast with AVX-512 BF16 or AMX).
  const bool bf16 = cfg.train.precision == "bf16" || (cuda && cfg.train.precision == "auto");
  if (cfg.train.threads > 0) at::set_num_threads(static_cast<int>(cfg.train.threads));
  auto pg = dist::ProcessGroup::create(world, cfg.dist, cuda);
  const int rank = pg->rank(), world_size = pg->size();

  // --- Run folder and logs ------------------------------------------------------------------
  std::string run_name = cfg.train.run_name;
  if (run_name.empty()) {
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    run_name = timestamp_name(pg->all_reduce_max_int(rank == 0 ? now : 0));
  }
  const fs::path run_dir = fs::path(cfg.train.output_dir) / run_name;
  summary.run_dir = run_dir.string();
  {
    core::log::Options lo;
    lo.rank = rank;
    lo.console_level = core::log::parse_level(cfg.log.level);
    lo.file_path = (run_dir / "logs" / ("rank_" + std::to_string(rank) + ".log")).string();
    core::log::configure(lo);
  }
  if (rank == 0) core::write_file_atomic((run_dir / "config.yaml").string(), config::to_yaml(cfg));
  CLIPPER_INFO("run " << run_dir.string() << " | " << world.describe() << " | device "
                      << device.str() << (bf16 ? " bf16" : " fp32") << " | " << pg->backend_name());
  if (cuda) train::set_tf32(cfg.train.tf32);

  // --- Model, tokenizer, loader -------------------------------------------------------------
  model::ModelSpec spec = model::load_model_spec(cfg.model.name);
  at::manual_seed(static_cast<std::uint64_t>(cfg.train.seed) * 1000003ull +
                  static_cast<std::uint64_t>(rank));
  model::Clip model = model::create_model(spec, static_cast<std::uint64_t>(cfg.train.seed));
  if (!cfg.model.init_from.empty()) {
    io::load_openclip_weights(model, cfg.model.init_from);
    CLIPPER_INFO("initialized from " << cfg.model.init_from);
  }
  if (cfg.model.patch_dropout > 0) model->set_patch_dropout(cfg.model.patch_dropout);
  if (cfg.model.lock_image) model->lock_image_tower(cfg.model.lock_image_unlocked_layers);
  if (cfg.model.lock_text) model->lock_text_tower(cfg.model.lock_text_unlocked_layers);
  if (cfg.model.grad_checkpointing) model->set_grad_checkpointing(true);
  auto tok = tokenizer::make_tokenizer(spec.tokenizer, spec.context_length);
  if (tok->vocab_size() > spec.vocab_size)
    throw core::InputError("tokenizer '" + spec.tokenizer + "' has " +
                           std::to_string(tok->vocab_size()) + " ids but model " + spec.name +
                           " has vocab_size " + std::to_string(spec.vocab_size) + " (" + spec.path +
                           "): set text_cfg.vocab_size to at least the tokenizer's size");

  if (cfg.data.train_shards.empty())
    throw core::InputError(
        "data.train_shards is empty: name the training shards in a config file or with --set");
  auto lopts = data::LoaderOptions::from_config(cfg.data, cfg.train.batch_size,
                                                static_cast<int>(spec.image_size), rank, world_size,
                                                static_cast<std::uint64_t>(cfg.train.seed));
  lopts.drop_last = true;  // equal batches on every rank (the loss all-gathers them)
  data::Loader loader(lopts, tok);
  const std::int64_t accum = cfg.train.accum_freq;
  const std::int64_t steps_per_epoch = loader.batches_per_epoch() / accum;
  if (steps_per_epoch <= 0)
    throw core::InputError("the training data gives " + std::to_string(loader.batches_per_epoch()) +
                           " full batches per rank per epoch, fewer than train.accum_freq=" +
                           std::to_string(accum) + ": lower train.batch_size or add data");
  const std::int64_t total_steps =
      cfg.train.max_steps > 0 ? cfg.train.max_steps : cfg.train.epochs * steps_per_epoch;

  train::StepOptions sopts;
  sopts.bf16 = bf16;
  sopts.grad_clip_norm = cfg.optim.grad_clip_norm;
  // CUDA: read back once per log line, so steps queue up on the device without host waits.
  sopts.read_every = cfg.train.sync_every > 0 ? cfg.train.sync_every
                     : device.is_cuda()       ? cfg.train.log_every
                                              : 1;
  sopts.channels_last = cfg.train.channels_last && device.is_cuda();
  train::TrainStep step(model, pg, cfg, device, sopts);

  // --- Resume -------------------------------------------------------------------------------
  checkpoint::Manager ckpt(run_dir.string(), rank, world_size, cfg.checkpoint.keep_last,
                           [pg] { pg->barrier("checkpoint"); });
  std::int64_t global_step = 0, nan_total = 0, nan_in_row = 0;
  if (!cfg.checkpoint.resume.empty()) {
    std::string path;
    if (cfg.checkpoint.resume == "latest") {
      std::int64_t found = -1;
      if (rank == 0) {
        if (auto latest = ckpt.latest_valid()) found = checkpoint::step_of(*latest);
      }
      found = pg->all_reduce_max_int(found);  // every rank takes rank 0's choice
      if (found >= 0)
        path = (fs::path(ckpt.checkpoints_dir()) / checkpoint::step_dir_name(found)).string();
      else
        CLIPPER_WARN("--resume latest: no valid checkpoint in " << ckpt.checkpoints_dir()
                                                                << "; starting fresh");
    } else {
      path = cfg.checkpoint.resume;
    }
    if (!path.empty()) {
      const auto st = checkpoint::load(path, rank, world_size);
      io::load_state_dict(*model, st.model, path + "/model.safetensors");
      step.optimizer().load_state(st.optimizer);
      global_step = st.trainer.at("step").get<std::int64_t>();
      nan_total = st.trainer.value("nan_total", 0);
      nan_in_row = st.trainer.value("nan_in_row", 0);
      step.set_nan_in_row(nan_in_row);
      loader.load_state(st.rank_json.at("loader"));
      set_rng_state(st.rank_tensors, device);
      CLIPPER_INFO("resumed from " << path << " at step " << global_step);
    }
  }

  auto save = [&](std::int64_t at_step) {
    const auto t = Clock::now();
    checkpoint::State st;
    if (rank == 0) {
      st.model = io::model_state_dict(*model);
      st.optimizer = step.optimizer().state();
      st.trainer = {{"step", at_step},          {"total_steps", total_steps},
                    {"nan_total", nan_total},   {"nan_in_row", nan_in_row},
                    {"world_size", world_size}, {"model", spec.name}};
      st.config_yaml = config::to_yaml(cfg);
    }
    st.rank_json = {{"loader", loader.state()}};
    st.rank_tensors = rng_state(device);
    const std::string dir = ckpt.save(at_step, st);
    CLIPPER_INFO("checkpoint " << dir << " (" << std::fixed << std::setprecision(1) << since(t)
                               << " s)");
  };

  // --- Evaluation ---------------------------------------------------------------------------
  auto prepare = [&](const at::Tensor& images) { return step.prepare_images(images); };
  auto evaluate = [&](std::int64_t at_step, train::Scalars& out) {
    const auto t = Clock::now();
    const auto rep = loop::evaluate(cfg, *model, tok, *pg, device, prepare, at_step);
    out.insert(out.end(), rep.scalars.begin(), rep.scalars.end());
    if (rep.zeroshot_top1 >= 0) summary.zeroshot_top1 = rep.zeroshot_top1;
    CLIPPER_DEBUG("evaluation took " << since(t) << " s");
  };

  // --- Metrics ------------------------------------------------------------------------------
  std::vector<std::unique_ptr<train::MetricSink>> sinks;
  if (rank == 0) {
    if (cfg.log.jsonl)
      sinks.push_back(std::make_unique<train::JsonlSink>((run_dir / "metrics.jsonl").string()));
    if (cfg.log.tensorboard)
      sinks.push_back(std::make_unique<train::TensorBoardSink>((run_dir / "tensorboard").string()));
  }
  auto emit = [&](std::int64_t s, const train::Scalars& scalars) {
    for (auto& sink : sinks) {
      sink->write(s, scalars);
      sink->flush();
    }
  };
  const double flops_per_sample =
      3.0 * model::forward_flops_per_sample(spec);  // forward + backward
  const double peak =
      cfg.train.peak_tflops > 0 ? cfg.train.peak_tflops * 1e12 : (cuda ? 790e12 : 0.0);
  const std::int64_t samples_per_step = cfg.train.batch_size * accum * world_size;

  // --- The loop -----------------------------------------------------------------------------
  CLIPPER_INFO("model " << spec.name << " (" << std::fixed << std::setprecision(2)
                        << model::parameter_count(spec) / 1e6 << " M parameters) | " << total_steps
                        << " steps, " << steps_per_epoch << " per epoch | global batch "
                        << samples_per_step);
  auto window_start = Clock::now();
  auto last_progress = Clock::now() - std::chrono::hours(1);
  auto last_ckpt_time = Clock::now();
  const std::int64_t first_step = global_step;
  std::int64_t window_steps = 0;
  double window_data_wait = 0, window_loss = 0;
  std::int64_t window_loss_n = 0;
  bool stopped = false;
  std::int64_t steps_since_agreement = 0;
  std::vector<train::MicroBatch> micro;
  while (global_step < total_steps) {
    micro.clear();
    const auto wait_start = Clock::now();
    while (static_cast<std::int64_t>(micro.size()) < accum) {
      auto b = loader.next();
      if (!b) continue;  // end of an epoch: the next call starts the following one
      micro.push_back({b->images, b->tokens});
    }
    window_data_wait += since(wait_start);
    const double lr = optim::learning_rate(cfg.optim, global_step, total_steps);
    train::StepResult r = step.run(micro, lr);
    ++global_step;
    ++window_steps;
    const bool final_step = global_step == total_steps;

    // Every rank agrees on stopping and on time-based checkpoints: after every step on one rank
    // (host-only checks); with several ranks every train.sync_every steps (a collective and a host
    // read), counted apart from the reads that logs and checkpoints force, so a stop request is
    // acted on within train.sync_every steps whatever the other intervals are.
    std::int64_t flags = 0;
    const bool agree = world_size == 1 || final_step || ++steps_since_agreement >= sopts.read_every;
    if (agree) steps_since_agreement = 0;
    if (agree && core::stop_signal() != 0) flags |= 1;
    if (agree && cfg.train.max_wall_time_minutes > 0 &&
        since(started) > 60.0 * cfg.train.max_wall_time_minutes)
      flags |= 1;
    if (cfg.train.stop_at_step > 0 && global_step >= cfg.train.stop_at_step &&
        global_step < total_steps)
      flags |= 1;
    if (agree && rank == 0 && cfg.checkpoint.every_minutes > 0 &&
        since(last_ckpt_time) > 60.0 * cfg.checkpoint.every_minutes)
      flags |= 2;
    if (agree && world_size > 1) {
      auto f = at::tensor({flags & 1, (flags >> 1) & 1}, at::kLong).to(pg->device());
      pg->all_reduce(f, dist::ReduceOp::max, "stop/checkpoint agreement");
      auto h = f.cpu();
      flags = h[0].item<std::int64_t>() | (h[1].item<std::int64_t>() << 1);
    }
    const bool stop = (flags & 1) && !final_step;  // the last step finishes the run normally
    const bool log_now = global_step % cfg.train.log_every == 0 || final_step || stop;
    const bool save_now =
        !final_step &&
        ((cfg.checkpoint.every_steps > 0 && global_step % cfg.checkpoint.every_steps == 0) ||
         (flags & 2) || stop);
    const bool eval_now =
        !final_step && cfg.eval.every_steps > 0 && global_step % cfg.eval.every_steps == 0;
    // Logs, checkpoints and evaluations see every step's loss and NaN count: read back first.
    if (!r.read && (log_now || save_now || eval_now || final_step)) r = step.read_back();
    if (r.read && r.window_steps > 0) {
      nan_total += r.window_skipped;
      nan_in_row = r.nan_in_row;
      if (r.window_skipped > 0) {
        CLIPPER_WARN("step " << global_step << ": " << r.window_skipped << " of the last "
                             << r.window_steps
                             << " step(s) had a non-finite loss or gradient and were skipped ("
                             << nan_in_row << " in a row now)");
        if (cfg.train.nan_policy == "stop" || r.max_nan_in_row >= cfg.train.max_nan_in_row)
          throw core::Error("stopping: " + std::to_string(r.max_nan_in_row) +
                            " non-finite step(s) in a row by step " + std::to_string(global_step) +
                            " (train.nan_policy=" + cfg.train.nan_policy +
                            ", train.max_nan_in_row=" + std::to_string(cfg.train.max_nan_in_row) +
                            ")");
      }
      window_loss += r.window_loss_sum;
      window_loss_n += r.window_steps - r.window_skipped;
      if (r.window_steps > r.window_skipped) summary.last_loss = r.last_loss;
    }

    if (log_now) {
      const double elapsed = since(window_start);
      const double sps = window_steps * samples_per_step / std::max(elapsed, 1e-9);
      const auto counters = loader.counters();
      train::Scalars s = {
          {"train/loss", window_loss_n ? window_loss / window_loss_n : std::nan("")},
          {"train/lr", lr},
          {"train/logit_scale", r.logit_scale},
          {"train/grad_norm", r.grad_norm},
          {"perf/samples_per_s", sps},
          {"perf/samples_per_s_per_device", sps / world_size},
          {"perf/data_wait_share", window_data_wait / std::max(elapsed, 1e-9)},
          {"data/bad_samples", static_cast<double>(counters.bad_samples())},
          {"data/shard_errors", static_cast<double>(counters.shard_errors())},
          {"train/nan_skipped", static_cast<double>(nan_total)}};
      if (peak > 0) s.emplace_back("perf/mfu", flops_per_sample * sps / world_size / peak);
      emit(global_step, s);
      const bool show =
          since(last_progress) >= cfg.log.progress_every_s || global_step == total_steps || stop;
      if (show) {
        const double done = static_cast<double>(global_step - first_step);
        const double eta = done > 0 ? since(started) / done * (total_steps - global_step) : 0;
        std::ostringstream line;
        line << "step " << global_step << "/" << total_steps << " (" << std::fixed
             << std::setprecision(1) << 100.0 * global_step / total_steps << "%) | epoch "
             << global_step / steps_per_epoch << " | loss " << std::setprecision(4)
             << (window_loss_n ? window_loss / window_loss_n : std::nan("")) << " | lr "
             << std::setprecision(6) << lr << " | " << std::setprecision(0) << sps
             << " samples/s | data wait " << std::setprecision(0)
             << 100.0 * window_data_wait / std::max(elapsed, 1e-9) << "% | ETA "
             << core::format_duration(eta);
        CLIPPER_INFO(line.str());
        last_progress = Clock::now();
      }
      window_start = Clock::now();
      window_steps = 0;
      window_data_wait = 0;
      window_loss = 0;
      window_loss_n = 0;
    }

    if (save_now) {
      save(global_step);
      last_ckpt_time = Clock::now();
    }
    if (stop) {
      CLIPPER_INFO("stopping at step "
                   << global_step << " after saving ("
                   << (core::stop_signal() ? "signal " + std::to_string(core::stop_signal())
                                           : std::string("limit"))
                   << "); continue with --resume latest");
      stopped = true;
      break;
    }
    if (eval_now) {
      train::Scalars s;
      evaluate(global_step, s);
      emit(global_step, s);
    }
  }

  if (!stopped) {
    if (cfg.checkpoint.save_at_end) save(global_step);
    if (cfg.eval.at_end) {
      train::Scalars s;
      evaluate(global_step, s);
      emit(global_step, s);
    }
    if (rank == 0) {
      const std::string out = (run_dir / "export").string();
      io::export_openclip(model, spec, out);
    }
    pg->barrier("end of training");
  }
  summary.exit_code = stopped ? kExitStoppedAfterSave : kExitFinished;
  summary.steps = global_step;
  summary.seconds = since(started);
  CLIPPER_INFO("done: " << global_step << " steps in " << core::format_duration(summary.seconds));
  core::log::flush();
  return summary;
}

}  // namespace clipper::loop
