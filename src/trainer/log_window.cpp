#include "clipper/trainer/log_window.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <sstream>

#include "clipper/core/text.hpp"

namespace clipper::trainer {
namespace {

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

LogWindow::LogWindow(LogWindowOptions options, Clock clock)
    : options_(options), clock_(clock ? std::move(clock) : Clock(steady_seconds)) {
  start_s_ = run_start_s_ = clock_();
  last_progress_s_ = -1e300;
}

void LogWindow::add_read(const train::StatsWindow& w) {
  loss_sum_ += w.window_loss_sum;
  loss_n_ += w.window_steps - w.window_skipped;
}

double LogWindow::elapsed() const {
  return std::max(clock_() - start_s_, 1e-9);
}

double LogWindow::mean_loss() const {
  return loss_n_ > 0 ? loss_sum_ / static_cast<double>(loss_n_) : std::nan("");
}

double LogWindow::samples_per_s() const {
  return static_cast<double>(steps_ * options_.samples_per_step) / elapsed();
}

double LogWindow::data_wait_share() const {
  return data_wait_s_ / elapsed();
}

std::int64_t LogWindow::epoch_of(std::int64_t step) const {
  return std::max<std::int64_t>(0, step - 1) / std::max<std::int64_t>(1, options_.steps_per_epoch);
}

train::Scalars LogWindow::scalars(std::int64_t step, double lr, const train::StatsWindow& last,
                                  const DataCounts& data, std::int64_t nan_total) const {
  const double sps = samples_per_s();
  const double steps = static_cast<double>(std::max<std::int64_t>(1, steps_));
  train::Scalars s = {{"train/loss", mean_loss()},
                      {"train/lr", lr},
                      {"train/logit_scale", last.logit_scale},
                      {"train/grad_norm", last.grad_norm},
                      {"perf/samples_per_s", sps},
                      {"perf/samples_per_s_per_device", sps / options_.world_size},
                      {"perf/data_wait_share", data_wait_share()},
                      {"data/bad_samples", static_cast<double>(data.bad_samples)},
                      {"data/shard_errors", static_cast<double>(data.shard_errors)},
                      {"train/nan_skipped", static_cast<double>(nan_total)},
                      {"train/epoch", static_cast<double>(step) /
                                          std::max<std::int64_t>(1, options_.steps_per_epoch)},
                      {"train/samples_seen", static_cast<double>(step * options_.samples_per_step)},
                      {"perf/step_time_s", elapsed() / steps},
                      {"perf/data_time_s", data_wait_s_ / steps},
                      {"time/since_start_s", clock_() - run_start_s_}};
  if (options_.peak_flops > 0)
    s.emplace_back("perf/mfu", options_.train_flops_per_sample * sps / options_.world_size /
                                   options_.peak_flops);
  return s;
}

bool LogWindow::progress_due(bool force) const {
  return force || clock_() - last_progress_s_ >= options_.progress_every_s;
}

std::string LogWindow::progress_line(std::int64_t step, double lr) {
  const auto total = options_.total_steps;
  const double done = static_cast<double>(step - options_.first_step);
  const double eta = done > 0 ? (clock_() - run_start_s_) / done * (total - step) : 0;
  std::ostringstream line;
  line << "step " << step << "/" << total << " (" << std::fixed << std::setprecision(1)
       << 100.0 * step / std::max<std::int64_t>(1, total) << "%) | epoch " << epoch_of(step)
       << " | loss " << std::setprecision(4) << mean_loss() << " | lr " << std::setprecision(6)
       << lr << " | " << std::setprecision(0) << samples_per_s() << " samples/s | data wait "
       << std::setprecision(0) << 100.0 * data_wait_share() << "% | ETA "
       << core::format_duration(eta);
  last_progress_s_ = clock_();
  return line.str();
}

void LogWindow::reset() {
  start_s_ = clock_();
  steps_ = loss_n_ = 0;
  data_wait_s_ = loss_sum_ = 0;
}

}  // namespace clipper::trainer
