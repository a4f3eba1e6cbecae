#include "clipper/trainer/run_folder.hpp"

#include <chrono>
#include <ctime>
#include <iomanip>
#include <sstream>

#include "clipper/checkpoint/checkpoint.hpp"
#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/dist/process_group.hpp"

namespace fs = std::filesystem;

namespace clipper::trainer {
namespace {

std::string timestamp_name() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::ostringstream os;
  os << "run-" << std::put_time(&tm, "%Y%m%d-%H%M%S");
  return os.str();
}

// The last committed valid checkpoint of a run folder, if any.
std::optional<checkpoint::Found> last_valid(const fs::path& run) {
  const auto committed = checkpoint::list_committed((run / "checkpoints").string());
  for (auto it = committed.rbegin(); it != committed.rend(); ++it) {
    try {
      checkpoint::validate(it->dir, /*check_crc=*/false);
      return *it;
    } catch (const core::InputError&) {
    }
  }
  return std::nullopt;
}

// A fresh start must not silently run over an earlier run's checkpoints.
void check_fresh_start(const fs::path& run, const config::CheckpointConfig& checkpoint) {
  const auto found = last_valid(run);
  if (!found) return;
  if (!checkpoint.overwrite)
    throw core::InputError(
        "run folder '" + run.string() + "' already holds checkpoints (the last one: step " +
        std::to_string(found->step) +
        "): continue it with --resume latest, choose another train.run_name, or set "
        "checkpoint.overwrite=true to start over (its checkpoints are then set aside)");
  const fs::path aside = run / "checkpoints" / "abandoned" / ("before-" + timestamp_name());
  fs::create_directories(aside);
  for (const auto& f : checkpoint::list_committed((run / "checkpoints").string()))
    fs::rename(f.dir, aside / fs::path(f.dir).filename());
  CLIPPER_WARN("checkpoint.overwrite: starting fresh in "
               << run.string() << "; its checkpoints are set aside in " << aside.string());
}

// The run folder under `output_dir` with committed checkpoints (valid or not) written last.
std::string newest_committed_run(const std::string& output_dir) {
  std::error_code ec;
  std::string best;
  fs::file_time_type best_time{};
  for (const auto& e : fs::directory_iterator(output_dir, ec)) {
    if (!e.is_directory(ec)) continue;
    const auto committed = checkpoint::list_committed((e.path() / "checkpoints").string());
    if (committed.empty()) continue;
    const auto t = fs::last_write_time(fs::path(committed.back().dir) / "manifest.json", ec);
    if (!ec && (best.empty() || t > best_time)) {
      best = e.path().filename().string();
      best_time = t;
    }
  }
  return best;
}

std::string decide_name(const config::TrainConfig& train,
                        const config::CheckpointConfig& checkpoint) {
  std::string name = train.run_name;
  // No resumable run, but committed checkpoints that are all invalid: that run, whose resume then
  // fails naming each problem, never a fresh start in a new folder.
  if (name.empty() && checkpoint.resume == "latest") name = newest_resumable_run(train.output_dir);
  if (name.empty() && checkpoint.resume == "latest") name = newest_committed_run(train.output_dir);
  if (name.empty()) {
    // A new folder: a second run started within the same second gets a suffix.
    name = timestamp_name();
    const std::string base = name;
    for (int i = 2; fs::exists(fs::path(train.output_dir) / name); ++i)
      name = base + "-" + std::to_string(i);
  }
  if (checkpoint.resume.empty()) check_fresh_start(fs::path(train.output_dir) / name, checkpoint);
  return name;
}

}  // namespace

std::string newest_resumable_run(const std::string& output_dir) {
  std::error_code ec;
  std::string best;
  fs::file_time_type best_time{};
  for (const auto& e : fs::directory_iterator(output_dir, ec)) {
    if (!e.is_directory(ec)) continue;
    const auto found = last_valid(e.path());
    if (!found) continue;
    const auto t = fs::last_write_time(fs::path(found->dir) / "manifest.json", ec);
    if (!ec && (best.empty() || t > best_time)) {
      best = e.path().filename().string();
      best_time = t;
    }
  }
  return best;
}

fs::path choose_run_folder(const config::TrainConfig& train,
                           const config::CheckpointConfig& checkpoint, dist::ProcessGroup& pg) {
  // "+name" or "-error": every rank learns rank 0's decision.
  std::string decision;
  if (pg.rank() == 0) {
    try {
      decision = "+" + decide_name(train, checkpoint);
    } catch (const std::exception& e) {
      decision = std::string("-") + e.what();
    }
  }
  decision = pg.broadcast_string(decision, 0);
  if (decision.empty() || decision[0] == '-') throw core::InputError(decision.substr(1));
  return fs::path(train.output_dir) / decision.substr(1);
}

std::string continue_command(const std::string& command, const fs::path& run_dir, bool name_given) {
  const std::string tail =
      (name_given ? "" : "--set train.run_name=" + run_dir.filename().string() + " ") +
      "--resume latest";
  return command.empty() ? "the same command with " + tail : command + " " + tail;
}

}  // namespace clipper::trainer
