// When a run logs, saves, evaluates and stops, decided without a training process; which run
// folder a run takes (run_folder.hpp).
#include <gtest/gtest.h>

#include <filesystem>
#include <vector>

#include "clipper/dist/process_group.hpp"
#include "clipper/trainer/log_window.hpp"
#include "clipper/trainer/run_folder.hpp"
#include "clipper/trainer/schedule.hpp"
#include "test_util.hpp"

using namespace clipper::trainer;

namespace {

ScheduleOptions options(std::int64_t total) {
  ScheduleOptions o;
  o.total_steps = total;
  o.log_every = 10;
  return o;
}

// Runs the schedule to its end; returns the steps at which `pred` held.
template <class P>
std::vector<std::int64_t> steps_where(Schedule& s, P pred, LocalRequest local = {}) {
  std::vector<std::int64_t> out;
  while (s.keep_going()) {
    s.step_done(local);
    if (pred(s)) out.push_back(s.step());
  }
  return out;
}

}  // namespace

TEST(Schedule, LogsEveryNAndAtTheEndSavesAndEvaluatesOnTheirIntervalsButNotAtTheEnd) {
  auto o = options(25);
  o.save_every_steps = 10;
  o.eval_every_steps = 20;
  Schedule logs(o, 0), saves(o, 0), evals(o, 0);
  EXPECT_EQ(steps_where(logs, [](auto& s) { return s.logging(); }),
            (std::vector<std::int64_t>{10, 20, 25}));
  EXPECT_EQ(steps_where(saves, [](auto& s) { return s.saving(); }),
            (std::vector<std::int64_t>{10, 20}));
  EXPECT_EQ(steps_where(evals, [](auto& s) { return s.evaluating(); }),
            (std::vector<std::int64_t>{20}));
}

TEST(Schedule, AResumedScheduleStartsAtItsStep) {
  Schedule s(options(25), 18);
  EXPECT_EQ(steps_where(s, [](auto& x) { return x.logging(); }),
            (std::vector<std::int64_t>{20, 25}));
}

TEST(Schedule, StopAtStepSavesLogsAndStopsButNeverOnTheFinalStep) {
  auto o = options(30);
  o.stop_at_step = 12;
  Schedule s(o, 0);
  while (s.keep_going()) s.step_done({});
  EXPECT_EQ(s.step(), 12);
  EXPECT_TRUE(s.stopping());
  EXPECT_TRUE(s.saving());
  EXPECT_TRUE(s.logging());
  EXPECT_FALSE(s.evaluating());
  o.stop_at_step = 30;  // the last step finishes the run normally
  Schedule last(o, 0);
  while (last.keep_going()) last.step_done({});
  EXPECT_EQ(last.step(), 30);
  EXPECT_FALSE(last.stopping());
  EXPECT_FALSE(last.saving());
}

TEST(Schedule, ASignalOrTheWallTimeLimitStopsAtTheNextStep) {
  Schedule s(options(100), 0);
  s.step_done({});
  EXPECT_FALSE(s.stopping());
  s.step_done({/*signal=*/true, 0, 0});
  EXPECT_TRUE(s.stopping());
  EXPECT_FALSE(s.keep_going());
  auto o = options(100);
  o.max_wall_time_minutes = 1;
  Schedule timed(o, 0);
  timed.step_done({false, 59, 0});
  EXPECT_FALSE(timed.stopping());
  timed.step_done({false, 61, 0});
  EXPECT_TRUE(timed.stopping());
}

TEST(Schedule, TimeBasedSavesComeFromTheClockOwner) {
  auto o = options(100);
  o.save_every_minutes = 2;
  Schedule owner(o, 0);
  owner.step_done({false, 0, 100});
  EXPECT_FALSE(owner.saving());
  owner.step_done({false, 0, 121});
  EXPECT_TRUE(owner.saving());
  EXPECT_FALSE(owner.stopping());
  o.owns_save_clock = false;
  Schedule other(o, 0);
  other.step_done({false, 0, 500});
  EXPECT_FALSE(other.saving());
}

// With several ranks the agreement runs every agree_every steps, whatever forces reads: a signal
// seen by one rank stops every rank at the next agreement, and another rank's clock can ask for a
// save.
TEST(Schedule, SeveralRanksAgreeEveryNStepsAndTakeTheMaxOfEachRequest) {
  auto o = options(100);
  o.agree_every = 4;
  o.owns_save_clock = false;
  int agreements = 0;
  Agreement other_rank;
  Schedule s(o, 0, [&](const Agreement& mine) {
    ++agreements;
    return Agreement{mine.stop || other_rank.stop, mine.save || other_rank.save};
  });
  for (int i = 0; i < 3; ++i) s.step_done({/*signal=*/true, 0, 0});
  EXPECT_EQ(agreements, 0);
  EXPECT_FALSE(s.stopping());  // seen, not yet agreed
  other_rank.save = true;
  s.step_done({});
  EXPECT_EQ(agreements, 1);
  EXPECT_TRUE(s.saving());
  EXPECT_FALSE(s.stopping());  // this rank's signal was read on steps without an agreement
  other_rank = {true, false};
  for (int i = 0; i < 4; ++i) s.step_done({});
  EXPECT_EQ(agreements, 2);
  EXPECT_EQ(s.step(), 8);
  EXPECT_TRUE(s.stopping());
}

TEST(Schedule, ReadsBackWheneverALogSaveOrEvaluationNeedsTheLoss) {
  auto o = options(12);
  o.log_every = 5;
  o.save_every_steps = 4;
  Schedule s(o, 0);
  EXPECT_EQ(steps_where(s, [](auto& x) { return x.needs_read(); }),
            (std::vector<std::int64_t>{4, 5, 8, 10, 12}));
}

TEST(LogWindow, MeansRatesAndTheProgressLineFollowTheClock) {
  double now = 100.0;
  LogWindowOptions o;
  o.samples_per_step = 64;
  o.world_size = 2;
  o.total_steps = 40;
  o.steps_per_epoch = 10;
  o.progress_every_s = 5;
  o.train_flops_per_sample = 1e9;
  o.peak_flops = 1e12;
  LogWindow w(o, [&] { return now; });
  EXPECT_TRUE(w.progress_due(false));  // the first line comes at once
  for (int i = 0; i < 4; ++i) w.add_step();
  clipper::train::StatsWindow read;
  read.window_steps = 4;
  read.window_skipped = 1;
  read.window_loss_sum = 6.0;
  w.add_read(read);
  w.add_data_wait(0.5);
  now += 2.0;
  EXPECT_DOUBLE_EQ(w.mean_loss(), 2.0);  // 3 good steps
  EXPECT_DOUBLE_EQ(w.samples_per_s(), 4 * 64 / 2.0);
  EXPECT_DOUBLE_EQ(w.data_wait_share(), 0.25);
  const auto s = w.scalars(4, 1e-3, read, {3, 1}, 7);
  auto value = [&](const std::string& k) {
    for (const auto& [name, v] : s)
      if (name == k) return v;
    return -1.0;
  };
  EXPECT_DOUBLE_EQ(value("perf/samples_per_s_per_device"), 64.0);
  EXPECT_DOUBLE_EQ(value("perf/mfu"), 1e9 * 64.0 / 1e12);
  EXPECT_DOUBLE_EQ(value("data/bad_samples"), 3);
  EXPECT_DOUBLE_EQ(value("train/nan_skipped"), 7);
  EXPECT_DOUBLE_EQ(value("train/epoch"), 0.4);
  EXPECT_DOUBLE_EQ(value("train/samples_seen"), 4 * 64);
  EXPECT_DOUBLE_EQ(value("perf/step_time_s"), 0.5);
  EXPECT_DOUBLE_EQ(value("perf/data_time_s"), 0.125);
  EXPECT_DOUBLE_EQ(value("time/since_start_s"), 2.0);
  EXPECT_EQ(w.epoch_of(1), 0);
  EXPECT_EQ(w.epoch_of(10), 0);  // the last step of the first epoch
  EXPECT_EQ(w.epoch_of(11), 1);
  EXPECT_EQ(w.epoch_of(40), 3);  // the run's last step: epoch 3 of 0..3, not "epoch 4"
  const std::string line = w.progress_line(4, 1e-3);
  EXPECT_NE(line.find("step 4/40"), std::string::npos) << line;
  EXPECT_NE(line.find("loss 2.0000"), std::string::npos) << line;
  EXPECT_NE(line.find("data wait 25%"), std::string::npos) << line;
  EXPECT_NE(line.find("ETA 18s"), std::string::npos) << line;  // 2 s per 4 steps, 36 to go
  EXPECT_FALSE(w.progress_due(false));
  EXPECT_TRUE(w.progress_due(true));
  w.reset();
  EXPECT_TRUE(std::isnan(w.mean_loss()));
  now += 5.0;
  EXPECT_TRUE(w.progress_due(false));
}

// Issue 24, item 4: the step a resume on another layout goes on at is where this layout's run
// would have the data's steps left: 1 rank stopped at step 30 of 48 leaves 576 samples, 9 steps
// of 2 x 32, so 2 ranks (24 steps per epoch) go on at step 15 of 24, the same 62.5 %.
TEST(Schedule, AResumeOnAnotherLayoutGoesOnWhereTheDataStands) {
  EXPECT_EQ(step_on_new_layout(0, 9, 24), 15);
  EXPECT_EQ(step_on_new_layout(0, 36, 48), 12);  // 2 ranks at step 6 of 24 -> 1 rank
  EXPECT_EQ(step_on_new_layout(2, 0, 10), 30);   // after an epoch's last step
  EXPECT_EQ(step_on_new_layout(1, 10, 10), 10);  // at an epoch's start
  EXPECT_EQ(step_on_new_layout(0, 12, 10), 0);   // never before the start
}

// Issue 24 item 1: with no train.run_name, `--resume latest` over a run whose committed
// checkpoints are all invalid takes that run (where the resume then fails naming each problem),
// never a new timestamped folder that starts fresh; with nothing committed anywhere it does start
// a new folder.
TEST(RunFolder, ResumeLatestWithoutARunNameNeverStartsFreshBesideInvalidCheckpoints) {
  clipper::test::TempDir t;
  clipper::config::TrainConfig train;
  train.output_dir = t.file("runs");
  clipper::config::CheckpointConfig checkpoint;
  checkpoint.resume = "latest";
  clipper::dist::ProcessGroup one_rank;
  std::filesystem::create_directories(t.path() / "runs" / "empty" / "checkpoints");
  const auto fresh = choose_run_folder(train, checkpoint, one_rank);
  EXPECT_EQ(fresh.filename().string().rfind("run-", 0), 0u) << fresh;
  // A committed checkpoint whose model file is missing (as after a copy that stopped half-way).
  t.write("runs/broken/checkpoints/step_00000002/manifest.json",
          R"({"magic": "clipper-checkpoint", "format_version": 2, "step": 2, "sequence": 1,
              "world_size": 1, "files": {"model.safetensors": {"size": 10, "crc32": 0}}})");
  EXPECT_EQ(choose_run_folder(train, checkpoint, one_rank), t.path() / "runs" / "broken");
}
