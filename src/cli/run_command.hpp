#pragma once
// The command line a run was started with, as the user would type it again: for the "continue
// with" line that `clipper train` prints when it stops (docs/training.md, "Stopping and
// continuing").
#include <string>
#include <vector>

namespace clipper::cli {

// `args` joined by spaces, each quoted for a POSIX shell where it needs it.
std::string shell_command(const std::vector<std::string>& args);

// `args` without `--resume X` / `--resume=X` (the continue line adds `--resume latest` once).
std::vector<std::string> without_resume(std::vector<std::string> args);

// In `clipper launch`: records its own command line for its ranks (environment).
void export_launch_command();

// The command that started this process, quoted, without --resume: the command line of
// `clipper launch` when it started this rank, else torchrun's when torchrun did (its parent),
// else this process's own, with `srun --nodes=N --ntasks=M` before it under srun.
std::string started_command();

}  // namespace clipper::cli
