#include "clipper/trainer/trainer.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
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
#include "clipper/data/shard_list.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/io/openclip_stream.hpp"
#include "clipper/model/flops.hpp"
#include "clipper/optim/schedule.hpp"
#include "clipper/session/session.hpp"
#include "clipper/tokenizer/tokenizer.hpp"
#include "clipper/train/ema.hpp"
#include "clipper/train/metrics.hpp"
#include "clipper/train/siglip2_step.hpp"
#include "clipper/train/step.hpp"
#include "clipper/trainer/evaluate.hpp"
#include "clipper/trainer/log_window.hpp"
#include "clipper/trainer/openclip_resume.hpp"
#include "clipper/trainer/run_folder.hpp"
#include "clipper/trainer/schedule.hpp"
#include "clipper/trainer/state_parts.hpp"

namespace fs = std::filesystem;

namespace clipper::trainer {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void configure_logs(const fs::path& run_dir, int rank, const config::LogConfig& log) {
  core::log::Options lo;
  lo.rank = rank;
  lo.console_level = core::log::parse_level(log.level);
  lo.file_path = (run_dir / "logs" / ("rank_" + std::to_string(rank) + ".log")).string();
  core::log::configure(lo);
}

std::vector<std::unique_ptr<train::MetricSink>> make_sinks(const fs::path& run_dir,
                                                           const config::LogConfig& log) {
  std::vector<std::unique_ptr<train::MetricSink>> sinks;
  if (log.jsonl)
    sinks.push_back(std::make_unique<train::JsonlSink>((run_dir / "metrics.jsonl").string()));
  if (log.tensorboard)
    sinks.push_back(std::make_unique<train::TensorBoardSink>((run_dir / "tensorboard").string()));
  return sinks;
}

data::LoaderOptions train_loader_options(const config::Config& cfg, const session::Session& s) {
  if (cfg.data.train_shards.empty())
    throw core::InputError(
        "data.train_shards is empty: name the training shards in a config file or with --set");
  auto o = data::LoaderOptions::from_config(
      cfg.data, cfg.train.batch_size, static_cast<int>(s.spec.image_size), s.rank(), s.world_size(),
      static_cast<std::uint64_t>(cfg.train.seed));
  o.naflex_patch = s.spec.naflex_inputs() ? static_cast<int>(s.spec.patch_size) : 0;
  o.naflex_max_tokens = s.spec.max_seq_len;
  o.drop_last = true;  // equal batches on every rank (the loss all-gathers them)
  return o;
}

train::StepOptions step_options(const config::TrainConfig& t, const session::Session& s) {
  train::StepOptions o;
  o.bf16 = s.bf16;
  // CUDA: read back once per log line, so steps queue up on the device without host waits.
  o.read_every = t.sync_every > 0 ? t.sync_every : s.device.is_cuda() ? t.log_every : 1;
  o.channels_last = t.channels_last && s.device.is_cuda();
  return o;
}

// Token-budget batches (data.naflex_seq_lens) give the ranks different numbers of pairs per step:
// the loss must gather counts first (ContrastiveLoss::unequal_batches), which the chunked loss,
// SigLIP's neighbour exchange, CLIP's global loss and the distillation loss do not.
void check_token_budget_loss(const config::Config& cfg, int world_size) {
  if (cfg.data.naflex_seq_lens.empty()) return;
  const std::string why =
      "data.naflex_seq_lens (token-budget batches: the ranks hold different numbers of pairs) ";
  const auto& l = cfg.loss;
  if (l.chunked) throw core::InputError(why + "needs loss.chunked: false");
  if (l.kind == config::LossKind::clip && !l.local_loss)
    throw core::InputError(why + "needs loss.local_loss: true with loss.kind clip");
  if (l.kind == config::LossKind::siglip && l.siglip_exchange != config::SiglipExchange::gather)
    throw core::InputError(why + "needs loss.siglip_exchange: gather with loss.kind siglip");
  if (world_size > 1 && !l.distill_from.empty())
    throw core::InputError(why + "cannot be combined with loss.distill_from on " +
                           std::to_string(world_size) +
                           " ranks (the distillation loss takes equal batches on every rank)");
}

// eval.use_ema needs an average to evaluate.
void check_eval_ema(const config::Config& cfg) {
  if (cfg.eval.use_ema && cfg.train.ema_decay <= 0)
    throw core::InputError(
        "eval.use_ema is true but train.ema_decay is 0: set train.ema_decay (e.g. 0.999) to keep "
        "a weight average, or leave eval.use_ema false");
}

}  // namespace

struct Trainer::Impl {
  config::Config cfg;
  TrainerOptions options;
  Clock::time_point started = Clock::now();
  session::Session s;
  fs::path run_dir;
  std::unique_ptr<data::Loader> loader;
  std::unique_ptr<train::TrainStep> step;
  std::unique_ptr<checkpoint::Manager> checkpoints;
  std::int64_t steps_per_epoch = 0, total_steps = 0;
  TrainerCounters counters;
  std::vector<std::unique_ptr<checkpoint::Stateful>> owned_parts;
  checkpoint::Parts parts;
  std::vector<std::unique_ptr<train::MetricSink>> sinks;
  Clock::time_point last_save = Clock::now();
  RunSummary summary;
  std::unique_ptr<std::ofstream> sample_log;  // CLIPPER_SAMPLE_LOG: each batch's keys
  bool said_dropped = false;                  // the epoch-tail drop is logged once

  Impl(const config::Config& c, TrainerOptions o);
  checkpoint::ManagerOptions manager_options();
  void make_loader_and_step();
  void open_sample_log();
  void register_parts();
  std::vector<train::MicroBatch> next_batch(LogWindow& log);
  data::RegionBatch region_batch(const data::Batch& batch) const;
  void drop_epoch_tail();
  void wait_for_first_batches();
  void map_onto_layout();
  void account(const train::StatsWindow& r);
  void emit(std::int64_t step, const train::Scalars& scalars);
  void log_window(LogWindow& log, const Schedule& sched, double lr, const train::StatsWindow& r);
  void evaluate(std::int64_t at_step);
  RunSummary stop(const Schedule& sched);
  RunSummary already_finished();
  void close_summary(const Schedule& sched, int exit_code);
  void log_parameter_counts() const;
  RunSummary finish(const Schedule& sched);
  void export_model(const std::string& folder, bool average);
  LocalRequest local_request() const;
  Schedule make_schedule();
  LogWindow make_log_window() const;
  void resume_openclip();
};

namespace {

// loss.siglip2: the refusals, then the heads and mask embeddings as model parameters.
void add_siglip2_heads(const config::Config& cfg, model::ClipImpl& model) {
  if (!cfg.loss.siglip2.any()) return;
  train::check_siglip2(cfg, model);
  model::add_siglip2_heads(model, train::siglip2_head_options(cfg.loss.siglip2));
}

// Missing local shards stop the run before anything is built or written.
void check_shards(const config::Config& cfg) {
  data::check_local_shards(cfg.data.train_shards, "data.train_shards");
  data::check_local_shards(cfg.eval.zeroshot_shards, "eval.zeroshot_shards");
  data::check_local_shards(cfg.eval.retrieval_shards, "eval.retrieval_shards");
  check_suite(cfg.eval);
}

}  // namespace

Trainer::Impl::Impl(const config::Config& c, TrainerOptions o) : cfg(c), options(std::move(o)) {
  check_shards(cfg);
  core::install_stop_handlers();
  session::SessionOptions so;
  so.make_tokenizer = tokenizer::make_model_tokenizer;
  s = session::open_session(cfg, so);
  run_dir = choose_run_folder(cfg.train, cfg.checkpoint, *s.pg);
  summary.run_dir = run_dir.string();
  make_loader_and_step();  // the data and the step are checked before the run folder is made
  if (s.rank() == 0) core::make_private_dirs(run_dir.string());
  configure_logs(run_dir, s.rank(), cfg.log);
  if (s.rank() == 0) {
    core::write_file_atomic((run_dir / "config.yaml").string(), config::to_yaml(cfg));
    sinks = make_sinks(run_dir, cfg.log);
  }
  CLIPPER_INFO("run " << run_dir.string() << " | " << s.describe());
  open_sample_log();
  checkpoints = std::make_unique<checkpoint::Manager>(run_dir.string(), manager_options(), s.pg);
  checkpoints->check_shared();  // before any save: a checkpoint needs every rank's files
  register_parts();
}

checkpoint::ManagerOptions Trainer::Impl::manager_options() {
  checkpoint::ManagerOptions mo;
  mo.keep_last = cfg.checkpoint.keep_last;
  mo.timeout_s = cfg.checkpoint.timeout_s;
  mo.async = cfg.checkpoint.async;
  mo.poll_every = step_options(cfg.train, s).read_every;  // a commit check rides on a read-back
  mo.sync_command = cfg.checkpoint.sync_command;
  mo.sync_log = (run_dir / "logs" / "sync.log").string();
  mo.sync_stop_timeout_s = cfg.checkpoint.sync_stop_timeout_s;
  mo.on_commit = [this](const checkpoint::SaveReport& r) {
    emit(r.step, {{"checkpoint/blocked_s", r.blocked_s},
                  {"checkpoint/write_s", r.write_s},
                  {"checkpoint/sync_failures", static_cast<double>(r.sync.failures)},
                  {"checkpoint/prune_failures", static_cast<double>(r.prune_failures)}});
  };
  return mo;
}

// An audit of what each rank trained on (docs/training.md): with CLIPPER_SAMPLE_LOG=1 every batch
// appends a line "EPOCH KEY KEY ..." to logs/samples_rank_<R>.txt, across resumes.
void Trainer::Impl::open_sample_log() {
  const char* on = std::getenv("CLIPPER_SAMPLE_LOG");
  if (!on || !*on || std::string(on) == "0") return;
  const auto path = run_dir / "logs" / ("samples_rank_" + std::to_string(s.rank()) + ".txt");
  sample_log = std::make_unique<std::ofstream>(path, std::ios::app);
  if (!*sample_log) throw core::Error("cannot write the sample log '" + path.string() + "'");
}

void Trainer::Impl::make_loader_and_step() {
  check_token_budget_loss(cfg, s.world_size());
  loader = std::make_unique<data::Loader>(train_loader_options(cfg, s), s.tokenizer);
  const std::int64_t accum = cfg.train.accum_freq;
  steps_per_epoch = loader->batches_per_epoch() / accum;
  if (steps_per_epoch <= 0)
    throw core::InputError(
        "the training data gives " + std::to_string(loader->batches_per_epoch()) +
        " full batches per rank per epoch, fewer than train.accum_freq=" + std::to_string(accum) +
        ": lower train.batch_size or add data");
  total_steps = cfg.train.max_steps > 0 ? cfg.train.max_steps : cfg.train.epochs * steps_per_epoch;
  check_eval_ema(cfg);
  add_siglip2_heads(cfg, *s.model);  // model parameters: before the step takes them
  step = std::make_unique<train::TrainStep>(s.model, s.pg, train::StepConfig::from(cfg), s.device,
                                            step_options(cfg.train, s));
  if (auto teacher = session::open_teacher(cfg, s)) step->set_teacher(std::move(teacher));
  if (cfg.loss.siglip2.any())
    step->set_siglip2(std::make_unique<train::Siglip2Step>(
        cfg.loss.siglip2, *s.model, static_cast<std::uint64_t>(cfg.train.seed)));
}

// The state contract: one list, saved and resumed in the same order.
void Trainer::Impl::register_parts() {
  counters.total_steps = total_steps;
  counters.layout = {s.world_size(), cfg.train.batch_size, cfg.train.accum_freq};
  counters.model_name = s.spec.name;
  counters.step = step.get();
  auto model = make_model_parts(s.model, *step);
  owned_parts.push_back(std::move(model.whole));
  owned_parts.push_back(std::move(model.shards));
  owned_parts.push_back(make_optimizer_part(*step));
  owned_parts.push_back(make_rng_part(s.device));
  owned_parts.push_back(make_loader_part(*loader));
  parts = {{"model", checkpoint::Scope::global, owned_parts[0].get()},
           {"params", checkpoint::Scope::per_rank, owned_parts[1].get()},
           {"optimizer", checkpoint::Scope::per_rank, owned_parts[2].get()},
           {"trainer", checkpoint::Scope::global, &counters},
           {"rng", checkpoint::Scope::per_rank, owned_parts[3].get()},
           {"loader", checkpoint::Scope::per_rank, owned_parts[4].get()}};
  // After the model: a checkpoint without an average restarts it from the resumed weights.
  if (step->ema()) {
    auto ema = make_ema_parts(*step->ema());
    owned_parts.push_back(std::move(ema.whole));
    parts.push_back({"ema", checkpoint::Scope::global, owned_parts.back().get()});
    owned_parts.push_back(std::move(ema.shards));
    parts.push_back({"ema_shards", checkpoint::Scope::per_rank, owned_parts.back().get()});
  }
  if (step->siglip2() && cfg.loss.siglip2.distills()) {  // DINO's centres
    owned_parts.push_back(make_siglip2_part(*step->siglip2()));
    parts.push_back({"siglip2", checkpoint::Scope::global, owned_parts.back().get()});
  }
}

Trainer::Trainer(const config::Config& cfg, TrainerOptions options)
    : impl_(std::make_unique<Impl>(cfg, std::move(options))) {}

Trainer::~Trainer() = default;

const checkpoint::Parts& Trainer::parts() const {
  return impl_->parts;
}

bool Trainer::resume() {
  auto& m = *impl_;
  const auto dir = m.checkpoints->resolve(m.cfg.checkpoint.resume);
  const bool openclip = !m.cfg.checkpoint.resume_openclip.empty();
  if (!dir) {
    if (m.cfg.checkpoint.resume == "latest")
      CLIPPER_WARN("--resume latest: no valid checkpoint in "
                   << m.checkpoints->checkpoints_dir()
                   << (openclip ? "; continuing the OpenCLIP run" : "; starting fresh"));
    if (openclip) m.resume_openclip();
    return openclip;
  }
  if (openclip)  // this run's own checkpoint is newer than the OpenCLIP one it started from
    CLIPPER_INFO("checkpoint.resume_openclip is not used: resuming clipper's checkpoint " << *dir);
  m.checkpoints->load(*dir, m.parts);
  CLIPPER_INFO("resumed from " << *dir << " at step " << m.counters.global_step);
  m.map_onto_layout();
  return true;
}

// train.epochs across another layout (docs/training.md, "Another layout"): the saved step counts
// steps of the saved layout; the position that means the same here is where the data stands.
// With train.max_steps the run is a number of steps, whatever they hold: kept as saved.
void Trainer::Impl::map_onto_layout() {
  const auto& saved = counters.saved_layout;
  if (cfg.train.max_steps > 0 || saved == counters.layout) return;
  const auto at = loader->position();
  const std::int64_t left = at.batches_left / cfg.train.accum_freq;
  const std::int64_t mapped = step_on_new_layout(at.epoch, left, steps_per_epoch);
  const auto percent = [](std::int64_t step, std::int64_t total) {
    std::ostringstream os;
    os << std::fixed << std::setprecision(1) << (total > 0 ? 100.0 * step / total : 0.0) << " %";
    return os.str();
  };
  CLIPPER_INFO("the checkpoint counted steps of "
               << saved.text() << " (step " << counters.global_step << " of "
               << counters.saved_total_steps << ", "
               << percent(counters.global_step, counters.saved_total_steps) << "); this run has "
               << counters.layout.text() << ": epoch " << at.epoch << " has " << left
               << " step(s) left, so training goes on at step " << mapped << " of " << total_steps
               << " (" << percent(mapped, total_steps) << ")");
  counters.global_step = mapped;
}

// OpenCLIP's epoch_N.pt: N epochs done, so the schedule and the data go on at the start of epoch
// N (OpenCLIP keeps no position inside an epoch).
void Trainer::Impl::resume_openclip() {
  const auto& path = cfg.checkpoint.resume_openclip;
  const auto r = read_openclip_resume(path, *s.model, optim::adamw_options(cfg.optim, s.spec.name),
                                      cfg.optim.weight_decay,
                                      optim::no_decay_rule(train::StepConfig::from(cfg).optim));
  load_openclip_resume(r, *step);
  if (__builtin_mul_overflow(r.epoch, steps_per_epoch, &counters.global_step))
    throw core::InputError("checkpoint.resume_openclip '" + path + "': epoch " +
                           std::to_string(r.epoch) + " x " + std::to_string(steps_per_epoch) +
                           " steps per epoch overflows the step count");
  auto position = loader->state();  // a fresh loader: the start of epoch 0
  position["epoch"] = r.epoch;
  loader->load_state(position);
  if (r.optimizer_steps != static_cast<double>(counters.global_step))
    CLIPPER_WARN("checkpoint.resume_openclip '"
                 << path << "': OpenCLIP's AdamW took " << r.optimizer_steps << " steps in "
                 << r.epoch << " epoch(s), this run counts " << steps_per_epoch
                 << " per epoch: the learning-rate schedule goes on at step "
                 << counters.global_step);
  if (r.has_scaler)
    CLIPPER_INFO(
        "checkpoint.resume_openclip: the GradScaler state (OpenCLIP's amp) is not used: "
        "clipper's bf16 autocast needs no loss scaling");
  CLIPPER_INFO("continuing OpenCLIP run '" << r.name << "' from " << path << ": epoch " << r.epoch
                                           << " done, step " << counters.global_step);
}

// The checkpoint manager logs each save when it commits (at once, or a few steps later when
// checkpoint.async): how long training was blocked and how long the write took.
void Trainer::save(std::int64_t at_step) {
  auto& m = *impl_;
  m.counters.global_step = at_step;
  m.checkpoints->save(at_step, m.parts, config::to_yaml(m.cfg));
  m.last_save = Clock::now();
}

std::vector<train::MicroBatch> Trainer::Impl::next_batch(LogWindow& log) {
  const auto wait_start = Clock::now();
  drop_epoch_tail();
  std::vector<train::MicroBatch> micro;
  while (static_cast<std::int64_t>(micro.size()) < cfg.train.accum_freq) {
    auto b = loader->next();
    if (!b) continue;  // the next epoch starts
    micro.push_back({b->images, b->tokens, b->grids, region_batch(*b)});
    if (sample_log) {
      *sample_log << b->epoch;
      for (const auto& k : b->keys) *sample_log << ' ' << k;
      *sample_log << '\n' << std::flush;
    }
  }
  log.add_data_wait(since(wait_start));
  return micro;
}

// LocCa's region tasks of a batch (loss.siglip2.locca): one region per sample with regions, drawn
// by (train.seed, step); without regions read, every sample counts as without.
data::RegionBatch Trainer::Impl::region_batch(const data::Batch& b) const {
  data::RegionBatch rb;
  if (!cfg.loss.siglip2.locca) return rb;
  if (b.regions.empty()) {
    rb.without_regions = b.tokens.size(0);
    return rb;
  }
  return data::make_region_batch(b.regions, *s.tokenizer, cfg.loss.siglip2.box_bins,
                                 static_cast<std::uint64_t>(cfg.train.seed), counters.global_step);
}

// A rank's first batch may take minutes: after a re-split resume its workers first skip the
// samples of the saved streams that other ranks now train (docs/data.md). Waiting for it inside
// the first step's collective would run into dist.timeout_s, so the ranks agree on being ready in
// short rounds instead: one all-reduce after each wait of at most a few seconds.
void Trainer::Impl::wait_for_first_batches() {
  if (s.world_size() == 1) return;
  const auto start = Clock::now();
  const double round_s = std::clamp(s.pg->timeout() / 4, 0.05, 5.0);
  bool said = false;
  while (!s.pg->all(loader->ready(round_s))) {
    if (said || since(start) < 10) continue;
    said = true;
    CLIPPER_INFO(
        "waiting for every rank's first batch (a re-split resume first skips the "
        "samples other ranks train) ...");
  }
  if (said || since(start) > 2)
    CLIPPER_INFO("every rank has its first batch after " << std::fixed << std::setprecision(1)
                                                         << since(start) << " s");
}

// An accumulated step never straddles two epochs (OpenCLIP's rule, docs/training.md): the
// micro-batches an epoch has left, fewer than train.accum_freq, are read and dropped.
void Trainer::Impl::drop_epoch_tail() {
  const std::int64_t accum = cfg.train.accum_freq;
  const auto at = loader->position();
  if (at.batches_left == 0 || at.batches_left >= accum) return;
  for (std::int64_t i = 0; i < at.batches_left; ++i) loader->next();
  counters.dropped_batches += at.batches_left;
  if (said_dropped) return;
  said_dropped = true;
  CLIPPER_INFO("epoch " << at.epoch << " ends with " << at.batches_left
                        << " micro-batch(es), fewer than train.accum_freq=" << accum
                        << ": they are dropped, as at every epoch end (OpenCLIP's rule; counted "
                           "as dropped_batches in the checkpoint's trainer.json)");
}

LocalRequest Trainer::Impl::local_request() const {
  return {core::stop_signal() != 0, since(started), since(last_save)};
}

Schedule Trainer::Impl::make_schedule() {
  const auto agree_every = step_options(cfg.train, s).read_every;
  auto o = ScheduleOptions::from(cfg.train, cfg.checkpoint, cfg.eval, total_steps, agree_every,
                                 s.rank() == 0);
  Schedule::AgreeAcrossRanks agree;
  if (s.world_size() > 1) {
    agree = [pg = s.pg](const Agreement& mine) {
      auto f = at::tensor({std::int64_t{mine.stop}, std::int64_t{mine.save}}, at::kLong)
                   .to(pg->device());
      pg->all_reduce(f, dist::ReduceOp::max, "stop/checkpoint agreement");
      const auto h = f.cpu();
      return Agreement{h[0].item<std::int64_t>() != 0, h[1].item<std::int64_t>() != 0};
    };
  }
  return Schedule(o, counters.global_step, std::move(agree));
}

LogWindow Trainer::Impl::make_log_window() const {
  LogWindowOptions o;
  o.samples_per_step = cfg.train.batch_size * cfg.train.accum_freq * s.world_size();
  if (!cfg.data.naflex_seq_lens.empty())  // token-budget batches: the mean over an epoch
    o.samples_per_step = loader->samples_per_epoch() * s.world_size() * cfg.train.accum_freq /
                         std::max<std::int64_t>(1, loader->batches_per_epoch());
  o.world_size = s.world_size();
  o.train_flops_per_sample = 3.0 * model::forward_flops_per_sample(s.spec);  // fwd + bwd
  o.peak_flops = cfg.train.peak_tflops > 0 ? cfg.train.peak_tflops * 1e12
                 : s.device.is_cuda()      ? 790e12
                                           : 0.0;
  o.progress_every_s = cfg.log.progress_every_s;
  o.total_steps = total_steps;
  o.steps_per_epoch = steps_per_epoch;
  o.first_step = counters.global_step;
  return LogWindow(o);
}

std::string describe_work(const RunSummary& s, std::int64_t total_steps) {
  std::ostringstream os;
  os << "ran " << s.steps_run << " step(s) ";
  if (s.first_step > 0)
    os << "(" << s.first_step << " -> " << s.steps << " of " << total_steps << ") ";
  else
    os << "(of " << total_steps << ") ";
  os << "in " << core::format_duration(s.seconds);
  return os.str();
}

RunSummary Trainer::run() {
  auto& m = *impl_;
  m.summary.first_step = m.summary.steps = m.counters.global_step;
  if (m.counters.global_step >= m.total_steps) return m.already_finished();
  Schedule sched = m.make_schedule();
  LogWindow log = m.make_log_window();
  m.log_parameter_counts();
  CLIPPER_INFO("model " << m.s.spec.name << " (" << std::fixed << std::setprecision(2)
                        << model::parameter_count(m.s.spec) / 1e6 << " M parameters) | "
                        << m.total_steps << " steps, " << m.steps_per_epoch
                        << " per epoch | global batch "
                        << m.cfg.train.batch_size * m.cfg.train.accum_freq * m.s.world_size());
  m.wait_for_first_batches();
  while (sched.keep_going()) {
    const auto micro = m.next_batch(log);
    const double lr = optim::learning_rate(m.cfg.optim, sched.step(), m.total_steps);
    if (auto* siglip2 = m.step->siglip2()) siglip2->set_progress(sched.step(), m.total_steps);
    train::StepResult r = m.step->run(micro, lr);
    sched.step_done(m.local_request());
    m.checkpoints->poll();  // commits a background save once every rank has written it
    m.counters.global_step = sched.step();
    log.add_step();
    if (sched.needs_read() && !r.read) r = m.step->read_back();
    if (r.read) {
      m.account(r);
      log.add_read(r);
    }
    if (sched.logging()) m.log_window(log, sched, lr, r);
    if (sched.saving()) save(sched.step());
    if (sched.stopping()) return m.stop(sched);
    if (sched.evaluating()) m.evaluate(sched.step());
  }
  if (m.cfg.checkpoint.save_at_end) save(sched.step());
  return m.finish(sched);
}

// The NaN policy over a read-back window.
void Trainer::Impl::account(const train::StatsWindow& r) {
  if (r.window_steps == 0) return;
  counters.nan_total += r.window_skipped;
  if (r.window_steps > r.window_skipped) summary.last_loss = r.last_loss;
  if (r.window_skipped == 0) return;
  const auto step_now = counters.global_step;
  CLIPPER_WARN("step " << step_now << ": " << r.window_skipped << " of the last " << r.window_steps
                       << " step(s) had a non-finite loss or gradient and were skipped ("
                       << r.nan_in_row << " in a row now)");
  const auto& t = cfg.train;
  if (t.nan_policy == config::NanPolicy::stop || r.max_nan_in_row >= t.max_nan_in_row)
    throw core::Error("stopping: " + std::to_string(r.max_nan_in_row) +
                      " non-finite step(s) in a row by step " + std::to_string(step_now) +
                      " (train.nan_policy=" + config::name_of(t.nan_policy) +
                      ", train.max_nan_in_row=" + std::to_string(t.max_nan_in_row) + ")");
}

void Trainer::Impl::emit(std::int64_t at_step, const train::Scalars& scalars) {
  for (auto& sink : sinks) {
    sink->write(at_step, scalars);
    sink->flush();
  }
}

void Trainer::Impl::log_window(LogWindow& log, const Schedule& sched, double lr,
                               const train::StatsWindow& r) {
  const auto c = loader->counters();
  auto scalars =
      log.scalars(sched.step(), lr, r, {c.bad_samples(), c.shard_errors()}, counters.nan_total);
  if (auto* siglip2 = step->siglip2())  // each term apart (this rank's)
    for (auto& x : siglip2->take_scalars()) scalars.push_back(std::move(x));
  emit(sched.step(), scalars);
  if (log.progress_due(sched.final_step() || sched.stopping()))
    CLIPPER_INFO(log.progress_line(sched.step(), lr));
  log.reset();
}

void Trainer::Impl::evaluate(std::int64_t at_step) {
  const auto t = Clock::now();
  auto prepare = [this](const at::Tensor& images) { return step->prepare_images(images); };
  const train::AveragedWeights averaged(*step, cfg.eval.use_ema);  // before the gather
  const train::WholeParameters whole(*step);
  auto settings = EvalSettings::from(cfg);
  settings.bf16 = s.bf16;
  const auto rep = trainer::evaluate(settings, *s.model, s.tokenizer, *s.pg, s.device, prepare,
                                     "step " + std::to_string(at_step));
  if (rep.zeroshot_top1 >= 0) summary.zeroshot_top1 = rep.zeroshot_top1;
  emit(at_step, rep.scalars);
  CLIPPER_DEBUG("evaluation took " << since(t) << " s");
}

void Trainer::Impl::close_summary(const Schedule& sched, int exit_code) {
  summary.exit_code = exit_code;
  summary.steps = sched.step();
  summary.steps_run = summary.steps - summary.first_step;
  summary.seconds = since(started);
}

RunSummary Trainer::Impl::stop(const Schedule& sched) {
  // Exit 75 promises a committed checkpoint; the sync gets checkpoint.sync_stop_timeout_s.
  checkpoints->finish(/*stopping=*/true);
  const int sig = core::stop_signal();
  close_summary(sched, kExitStoppedAfterSave);
  CLIPPER_INFO("stopped at step " << sched.step() << " after saving ("
                                  << (sig ? "signal " + std::to_string(sig) : std::string("limit"))
                                  << "): " << describe_work(summary, total_steps));
  CLIPPER_INFO(
      "continue with: " << continue_command(options.command, run_dir, !cfg.train.run_name.empty()));
  core::log::flush();
  return summary;
}

// Resuming a run that is done changes nothing: no save, evaluation or export again.
RunSummary Trainer::Impl::already_finished() {
  CLIPPER_INFO("run " << run_dir.string() << " is already finished (step " << counters.global_step
                      << " of " << total_steps
                      << "): nothing to do; raise train.max_steps or train.epochs to train on");
  summary.exit_code = kExitFinished;
  summary.seconds = since(started);
  core::log::flush();
  return summary;
}

// A LiT or partly locked run says what it trains.
void Trainer::Impl::log_parameter_counts() const {
  std::int64_t trainable = 0, frozen = 0;
  for (const auto& p : s.model->parameters()) (p.requires_grad() ? trainable : frozen) += p.numel();
  if (frozen > 0)
    CLIPPER_INFO("parameters: " << std::fixed << std::setprecision(2) << trainable / 1e6
                                << " M trainable, " << frozen / 1e6 << " M frozen");
}

// Rank 0 writes the export, streamed tensor by tensor; with dist.zero 3 every rank takes part,
// gathering each unit while it is written (no moment holds the whole model gathered).
void Trainer::Impl::export_model(const std::string& folder, bool average) {
  const bool write = s.rank() == 0;
  if (step->zero() != 3 && !write) return;
  const train::AveragedWeights averaged(*step, average);
  step->read_parameters(
      [&] { io::export_openclip_streamed(*s.model, s.spec, (run_dir / folder).string(), write); });
}

RunSummary Trainer::Impl::finish(const Schedule& sched) {
  if (cfg.eval.at_end) evaluate(sched.step());
  export_model("export", false);
  if (step->ema()) export_model("export-ema", true);
  checkpoints->finish();  // the last save may still be writing (checkpoint.async)
  s.pg->barrier("end of training");
  close_summary(sched, kExitFinished);
  CLIPPER_INFO("done: finished at step " << summary.steps << ": "
                                         << describe_work(summary, total_steps));
  core::log::flush();
  return summary;
}

RunSummary run_training(const config::Config& cfg, TrainerOptions options) {
  Trainer t(cfg, std::move(options));
  t.resume();
  return t.run();
}

}  // namespace clipper::trainer
