#include "clipper/trainer/schedule.hpp"

#include <algorithm>
#include <utility>

namespace clipper::trainer {

ScheduleOptions ScheduleOptions::from(const config::TrainConfig& train,
                                      const config::CheckpointConfig& checkpoint,
                                      const config::EvalConfig& eval, std::int64_t total_steps,
                                      std::int64_t agree_every, bool owns_save_clock) {
  ScheduleOptions o;
  o.total_steps = total_steps;
  o.log_every = train.log_every;
  o.agree_every = agree_every;
  o.save_every_steps = checkpoint.every_steps;
  o.save_every_minutes = checkpoint.every_minutes;
  o.eval_every_steps = eval.every_steps;
  o.stop_at_step = train.stop_at_step;
  o.max_wall_time_minutes = train.max_wall_time_minutes;
  o.owns_save_clock = owns_save_clock;
  return o;
}

std::int64_t step_on_new_layout(std::int64_t epoch, std::int64_t steps_left,
                                std::int64_t steps_per_epoch) {
  return std::max<std::int64_t>(0, (epoch + 1) * steps_per_epoch - steps_left);
}

Schedule::Schedule(ScheduleOptions options, std::int64_t start_step, AgreeAcrossRanks agree)
    : options_(options), agree_(std::move(agree)), step_(start_step) {}

// With several ranks the agreement (a collective and a host read) runs every agree_every steps,
// counted apart from the reads that logs and checkpoints force, so a stop request is acted on
// within agree_every steps whatever the other intervals are. One rank checks every step.
bool Schedule::agreement_due() {
  if (!agree_ || final_step() || ++steps_since_agreement_ >= options_.agree_every) {
    steps_since_agreement_ = 0;
    return true;
  }
  return false;
}

Agreement Schedule::local_agreement(const LocalRequest& local, bool due) const {
  Agreement a;
  const auto& o = options_;
  if (due && local.signal) a.stop = true;
  if (due && o.max_wall_time_minutes > 0 && local.run_seconds > 60.0 * o.max_wall_time_minutes)
    a.stop = true;
  // Every rank is at the same step: no agreement needed for this one.
  if (o.stop_at_step > 0 && step_ >= o.stop_at_step) a.stop = true;
  if (due && o.owns_save_clock && o.save_every_minutes > 0 &&
      local.since_save_seconds > 60.0 * o.save_every_minutes)
    a.save = true;
  return a;
}

void Schedule::step_done(const LocalRequest& local) {
  ++step_;
  const bool due = agreement_due();
  agreed_ = local_agreement(local, due);
  if (due && agree_) agreed_ = agree_(agreed_);
  stopping_ = agreed_.stop && !final_step();
}

bool Schedule::logging() const {
  return step_ % options_.log_every == 0 || final_step() || stopping_;
}

bool Schedule::saving() const {
  if (final_step()) return false;  // the end of the run saves (checkpoint.save_at_end)
  const bool every = options_.save_every_steps > 0 && step_ % options_.save_every_steps == 0;
  return every || agreed_.save || stopping_;
}

bool Schedule::evaluating() const {
  return !final_step() && !stopping_ && options_.eval_every_steps > 0 &&
         step_ % options_.eval_every_steps == 0;
}

}  // namespace clipper::trainer
