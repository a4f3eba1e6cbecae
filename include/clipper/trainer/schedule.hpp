#pragma once
// When the loop saves, evaluates, logs and stops: small named decisions over the step counter,
// the config's intervals and what this rank was asked (a signal, the wall-time limit). The
// cross-rank agreement on stopping and on time-based saves is one collective every sync_every
// steps (on one rank: every step, without a collective). Unit-tested without a training process.
#include <cstdint>
#include <functional>

#include "clipper/config/config.hpp"

namespace clipper::trainer {

// What every rank agreed on after a step.
struct Agreement {
  bool stop = false;  // save and exit (signal, wall-time limit, train.stop_at_step)
  bool save = false;  // a time-based checkpoint (checkpoint.every_minutes)
};

// What this rank knows at a step boundary.
struct LocalRequest {
  bool signal = false;            // SIGTERM / SIGINT / SIGUSR1 arrived
  double run_seconds = 0;         // since the run started
  double since_save_seconds = 0;  // since the last checkpoint (or the start)
};

struct ScheduleOptions {
  std::int64_t total_steps = 0;
  std::int64_t log_every = 1;
  std::int64_t agree_every = 1;  // steps between agreements with several ranks
  std::int64_t save_every_steps = 0;
  double save_every_minutes = 0;
  std::int64_t eval_every_steps = 0;
  std::int64_t stop_at_step = 0;
  double max_wall_time_minutes = 0;
  bool owns_save_clock = true;  // this rank's clock decides time-based saves (rank 0)

  static ScheduleOptions from(const config::TrainConfig& train,
                              const config::CheckpointConfig& checkpoint,
                              const config::EvalConfig& eval, std::int64_t total_steps,
                              std::int64_t agree_every, bool owns_save_clock);
};

// The step a run resumed on another layout (world size, per-rank batch or accum_freq, without
// train.max_steps) goes on at, from where its data stands: the loader is in epoch `epoch` with
// `steps_left` of this layout's steps still to come in it, so the step is the one after which an
// uninterrupted run of this layout would have exactly those left, (epoch + 1) x steps_per_epoch
// - steps_left (docs/training.md, "Another layout"). The run then ends after the epochs asked
// for, and the schedule stands at the same fraction of the epochs as the data.
std::int64_t step_on_new_layout(std::int64_t epoch, std::int64_t steps_left,
                                std::int64_t steps_per_epoch);

class Schedule {
 public:
  // Max over ranks of each field; empty for one rank (no collective).
  using AgreeAcrossRanks = std::function<Agreement(const Agreement& mine)>;

  Schedule(ScheduleOptions options, std::int64_t start_step, AgreeAcrossRanks agree = {});

  bool keep_going() const { return step_ < options_.total_steps && !stopping_; }
  // Counts the step just run and, when due, agrees with the other ranks.
  void step_done(const LocalRequest& local);

  std::int64_t step() const { return step_; }
  std::int64_t total_steps() const { return options_.total_steps; }
  bool final_step() const { return step_ == options_.total_steps; }
  bool stopping() const { return stopping_; }  // never on the final step: that one finishes
  bool logging() const;
  bool saving() const;
  bool evaluating() const;
  // Logs, saves and evaluations see every step's loss and NaN count: read back first.
  bool needs_read() const { return logging() || saving() || evaluating() || final_step(); }

 private:
  bool agreement_due();
  Agreement local_agreement(const LocalRequest& local, bool due) const;
  ScheduleOptions options_;
  AgreeAcrossRanks agree_;
  std::int64_t step_;
  std::int64_t steps_since_agreement_ = 0;
  Agreement agreed_;
  bool stopping_ = false;
};

}  // namespace clipper::trainer
