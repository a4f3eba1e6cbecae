#pragma once
// Which run folder a `clipper train` writes to (<train.output_dir>/<name>):
//   train.run_name set          that folder.
//   empty, --resume latest      the run folder under train.output_dir whose last committed
//                               checkpoint is the newest (so a requeued job continues itself);
//                               none: the run folder whose committed checkpoints (all invalid)
//                               are the newest, where the resume fails naming them; no committed
//                               checkpoint anywhere: a new timestamped folder, starting fresh.
//   empty, no resume            a new timestamped folder (run-YYYYMMDD-HHMMSS, UTC).
// Starting fresh in a folder that already holds checkpoints is an error, unless
// checkpoint.overwrite is set: then they are set aside in checkpoints/abandoned/.
// Rank 0 decides; every rank gets the same folder, or the same error.
#include <filesystem>
#include <string>

#include "clipper/config/config.hpp"

namespace clipper::dist {
class ProcessGroup;
}

namespace clipper::trainer {

std::filesystem::path choose_run_folder(const config::TrainConfig& train,
                                        const config::CheckpointConfig& checkpoint,
                                        dist::ProcessGroup& pg);

// The run folder under `output_dir` whose last committed valid checkpoint was written last;
// empty when none has one.
std::string newest_resumable_run(const std::string& output_dir);

// How to continue this run: `command` (the command that started it, launcher included, without
// --resume) with `--resume latest` added once, and `--set train.run_name=<name>` too when the name
// was chosen by clipper (`name_given` false: the config had no train.run_name).
std::string continue_command(const std::string& command, const std::filesystem::path& run_dir,
                             bool name_given);

}  // namespace clipper::trainer
