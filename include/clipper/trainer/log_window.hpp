#pragma once
// The figures of one logging window (the steps since the last metrics record): loss sums,
// samples/s, the share of time spent waiting for data, and the progress line with its ETA.
// The clock is injected so tests can drive it.
#include <cstdint>
#include <functional>
#include <string>

#include "clipper/train/device_stats.hpp"
#include "clipper/train/metrics.hpp"

namespace clipper::trainer {

struct LogWindowOptions {
  std::int64_t samples_per_step = 1;  // global batch: batch x accum x world size
  int world_size = 1;
  double train_flops_per_sample = 0;  // for MFU
  double peak_flops = 0;              // per device; 0: no MFU
  double progress_every_s = 5;
  std::int64_t total_steps = 0;
  std::int64_t steps_per_epoch = 1;
  std::int64_t first_step = 0;  // where this process started (ETA counts from it)
};

// Data-quality counters shown beside the training figures.
struct DataCounts {
  std::int64_t bad_samples = 0, shard_errors = 0;
};

class LogWindow {
 public:
  using Clock = std::function<double()>;  // seconds, monotonic
  explicit LogWindow(LogWindowOptions options, Clock clock = {});

  void add_data_wait(double seconds) { data_wait_s_ += seconds; }
  void add_step() { ++steps_; }
  // A read-back: its good steps' losses join the window's mean.
  void add_read(const train::StatsWindow& w);

  double mean_loss() const;
  double samples_per_s() const;
  double data_wait_share() const;
  // The metrics record of the window at `step` (train/*, perf/*, data/*, time/*): see
  // docs/training.md for how each figure is aggregated.
  train::Scalars scalars(std::int64_t step, double lr, const train::StatsWindow& last,
                         const DataCounts& data, std::int64_t nan_total) const;
  // The epoch a step belongs to, counted from 0 as the loader counts it (step 1 is in epoch 0;
  // the last step of epoch 0 too).
  std::int64_t epoch_of(std::int64_t step) const;
  // The progress line, when progress_every_s has passed since the last one (or `force`).
  bool progress_due(bool force) const;
  std::string progress_line(std::int64_t step, double lr);
  // Starts the next window.
  void reset();

 private:
  double elapsed() const;
  LogWindowOptions options_;
  Clock clock_;
  double start_s_, run_start_s_, last_progress_s_;
  std::int64_t steps_ = 0, loss_n_ = 0;  // in the window
  double data_wait_s_ = 0, loss_sum_ = 0;
};

}  // namespace clipper::trainer
