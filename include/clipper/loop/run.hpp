#pragma once
// `clipper train`: the whole run, top to bottom in src/loop/run.cpp — world and process group,
// run folder, model, tokenizer, loader, resume, the step loop with metrics, progress, stop
// agreement, checkpoints and evaluation, then the final checkpoint, evaluation and export.
#include "clipper/config/config.hpp"

namespace clipper::loop {

// Exit codes of `clipper train`.
inline constexpr int kExitFinished = 0;
// Stopped by SIGTERM/SIGUSR1/SIGINT, the wall-time limit or train.stop_at_step, after saving a
// checkpoint: run the same command with --resume latest to continue.
inline constexpr int kExitStoppedAfterSave = 75;

struct RunSummary {
  int exit_code = kExitFinished;
  std::string run_dir;
  std::int64_t steps = 0;
  double last_loss = 0;
  double zeroshot_top1 = -1;  // -1: not evaluated
  double seconds = 0;
};

RunSummary run_training(const config::Config& cfg);

}  // namespace clipper::loop
