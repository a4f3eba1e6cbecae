#pragma once
// `clipper train`: the Trainer owns one run. Trainer(cfg) builds the session (world, process
// group, device, model, tokenizer), the run folder, the loader, the step and the checkpoint
// manager; resume() continues from checkpoint.resume; run() is the loop; save(step) writes every
// part of the state contract (parts()). run_training(cfg) does all four.
#include <cstdint>
#include <memory>
#include <string>

#include "clipper/checkpoint/stateful.hpp"
#include "clipper/config/config.hpp"

namespace clipper::trainer {

// Exit codes of `clipper train`.
inline constexpr int kExitFinished = 0;
// Stopped by SIGTERM/SIGUSR1/SIGINT, the wall-time limit or train.stop_at_step, after saving a
// checkpoint: run the same command with --resume latest to continue.
inline constexpr int kExitStoppedAfterSave = 75;

struct RunSummary {
  int exit_code = kExitFinished;
  std::string run_dir;
  std::int64_t steps = 0;       // the step the run is at
  std::int64_t first_step = 0;  // where this process started (after a resume: its step)
  std::int64_t steps_run = 0;   // steps this process ran
  double last_loss = 0;
  double zeroshot_top1 = -1;  // -1: not evaluated
  double seconds = 0;
};

struct TrainerOptions {
  // The command that started the run, without --resume (for the "continue with" message).
  std::string command;
};

class Trainer {
 public:
  explicit Trainer(const config::Config& cfg, TrainerOptions options = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Loads checkpoint.resume ("latest" or a folder) when set; without a clipper checkpoint to
  // resume, continues checkpoint.resume_openclip (an OpenCLIP epoch_N.pt) when set. Returns
  // whether it resumed from either.
  bool resume();
  RunSummary run();
  // Collective: a checkpoint of every part at `step`.
  void save(std::int64_t step);
  // The state contract: every part that a checkpoint holds, in one list.
  const checkpoint::Parts& parts() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// "ran 27 steps (89 -> 116 of 200) in 19s": what this process did.
std::string describe_work(const RunSummary& s, std::int64_t total_steps);

RunSummary run_training(const config::Config& cfg, TrainerOptions options = {});

}  // namespace clipper::trainer
