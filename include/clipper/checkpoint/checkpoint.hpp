#pragma once
// Checkpoints: one folder per step under <run>/checkpoints/step_<NNNNNNNN>/, written under a
// temporary name and renamed when complete. What goes in is a list of named Stateful parts
// (stateful.hpp): the same list saves and resumes. A manifest.json written last lists every file
// with its size and CRC-32 (computed while writing) and the commit sequence number; a folder
// without a valid manifest does not exist.
//
//   <part>.safetensors / <part>.json   global parts (rank 0): model, trainer, ema
//   rank_<R>.safetensors / .json       per-rank parts of rank R: optimizer (its flat shard),
//                                      rng, loader
//   config.yaml                        the effective run config (rank 0)
//   manifest.json                      magic, format version, step, sequence, world size, parts,
//                                      files (written last)
//
// Commit order is the truth: "latest" is the valid checkpoint committed last (highest sequence),
// not the highest step; sequence numbers never repeat within a run folder (set-aside ones count).
// Pruning keeps the newest committed ones and is best effort: a folder it cannot delete is a
// warning, retried at the next save, never a failed save. Resuming from an older checkpoint of
// this folder (whatever the spelling of its path) sets the ones committed after it aside
// (checkpoints/abandoned/<name>-seq<S>), so a later "latest" never returns to an abandoned branch.
// Rank 0 commits only a folder in which it sees every rank's files with the sizes they wrote: a
// checkpoint that cannot be resumed is never committed.
//
// Asynchronous saves (ManagerOptions::async): save() copies every part's state to host memory
// (pinned on CUDA) and returns; a background thread writes the files. The commit (the ranks agree
// that every file is on disk, rank 0 writes the manifest) runs on the training thread, in poll()
// at a later step or in wait(), because the process group must never be used from two threads.
// At most one save is in flight: the next save() commits the previous one first.
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "clipper/checkpoint/stateful.hpp"

namespace clipper::dist {
class ProcessGroup;
}

namespace clipper::checkpoint {

inline constexpr const char* kMagic = "clipper-checkpoint";
inline constexpr int kFormatVersion = 2;

// checkpoint.sync_command so far (rank 0; zero elsewhere).
struct SyncCounts {
  std::int64_t runs = 0, failures = 0;
};

// Deletes a folder; std::filesystem::remove_all unless a test injects a failure.
using RemoveFolder = std::function<void(const std::string&)>;

// What one save cost, reported when it commits (on the training thread, every rank).
struct SaveReport {
  std::string dir;
  std::int64_t step = 0;
  bool async = false;
  double blocked_s = 0;  // the training thread held up: snapshot, waits, commit
  double write_s = 0;    // writing the files (in the background when async)
  SyncCounts sync;
  std::int64_t prune_failures = 0;  // old folders not deleted so far (rank 0), retried each save
};

struct ManagerOptions {
  std::int64_t keep_last = 3;
  // How long ranks wait for each other inside a save or a load (rank 0 writes the big parts).
  double timeout_s = 1800.0;
  // save() snapshots to host memory and writes in the background; poll()/wait() commit.
  bool async = false;
  // With several ranks: poll() calls between the collectives that ask whether every rank has
  // written its files (the trainer passes its read-back interval, so CUDA steps stay queued).
  std::int64_t poll_every = 1;
  // Run by rank 0 after each commit, in the background ({dir}: the committed folder, quoted for
  // the shell); its output goes to sync_log. Failures are logged and counted, never thrown.
  std::string sync_command;
  std::string sync_log;
  // At a stop (finish(true)): how long to wait for the running sync before its process group is
  // killed (logged as unfinished; the checkpoint itself is committed already).
  double sync_stop_timeout_s = 300.0;
  // How pruning deletes a folder (default std::filesystem::remove_all); a seam for tests.
  RemoveFolder remove_folder;
  // Called on the training thread after every commit, after the log line.
  std::function<void(const SaveReport&)> on_commit;
};

// A checkpoint found on disk.
struct Found {
  std::string dir;
  std::int64_t step = 0;
  std::int64_t sequence = 0;
};

class BackgroundSync;

class Manager {
 public:
  Manager(std::string run_dir, ManagerOptions options, std::shared_ptr<dist::ProcessGroup> pg);
  // Joins the background threads; a save still in flight stays uncommitted (the previous
  // committed checkpoint remains the latest).
  ~Manager();
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;

  // Collective: every rank calls it with the same list of parts; returns the checkpoint folder
  // (committed on return, unless async: then poll() or wait() commits it). An error on any rank
  // reaches every rank as an error (no rank waits for a timeout); a background write's error at
  // the commit.
  std::string save(std::int64_t step, const Parts& parts, const std::string& config_yaml);
  // Collective, every rank at every step: commits the save in flight once every rank has
  // written it (asks the other ranks every poll_every calls). Cheap when nothing is in flight.
  void poll();
  // Collective: waits for the save in flight, if any, and commits it.
  void wait();
  // Collective: wait(), then (rank 0) waits for the background sync and logs its counts. With
  // `stopping`, the sync gets at most sync_stop_timeout_s and is then killed.
  void finish(bool stopping = false);
  // Collective, once before the first save on several ranks: every rank writes a probe file into
  // the checkpoints folder and rank 0 checks that it sees them all. Throws InputError on every
  // rank, naming rank 0's folder and the folder of a rank it cannot see, when they differ.
  void check_shared();
  bool in_flight() const { return pending_ != nullptr; }
  SyncCounts sync_counts() const;
  struct Pending;  // a save between its start and its commit (checkpoint.cpp)
  // Collective: `resume` is "" (nothing), "latest" (the last committed valid checkpoint of this
  // run, decided by rank 0) or a checkpoint folder. Returns the folder every rank will load, or
  // nothing (no checkpoint committed yet). "latest" over committed checkpoints that are all
  // invalid throws InputError naming each problem. Checkpoints of this folder committed after the
  // chosen one are set aside as an abandoned branch.
  std::optional<std::string> resolve(const std::string& resume);
  // Collective: loads every part from `dir`; each rank checks the CRC of the files it reads.
  void load(const std::string& dir, const Parts& parts) const;

  // Not collective. The last committed checkpoint whose manifest and file sizes check out.
  std::optional<Found> latest_valid() const;
  const std::string& checkpoints_dir() const { return dir_; }

 private:
  std::unique_ptr<Pending> begin_save(std::int64_t step, const Parts& parts,
                                      const std::string& config_yaml);
  void commit_pending();
  void report(const Pending& p);
  void commit(const std::string& tmp, const std::string& final_dir);
  void prune() noexcept;
  void set_aside_after(const Found& chosen);
  std::optional<Found> latest_for_resume() const;
  std::string dir_;
  ManagerOptions options_;
  std::shared_ptr<dist::ProcessGroup> pg_;
  std::unique_ptr<Pending> pending_;
  std::unique_ptr<BackgroundSync> sync_;  // rank 0 with a sync_command
  std::int64_t prune_failures_ = 0;
};

// Every valid-looking checkpoint folder (manifest readable), oldest commit first; folders with
// other names or unreadable manifests are skipped with a warning, never thrown past.
std::vector<Found> list_committed(const std::string& checkpoints_dir);
// Throws InputError naming the file and the problem when `dir` is not a complete checkpoint.
// check_crc: also stream every file and compare its CRC-32 (otherwise sizes only).
nlohmann::json validate(const std::string& dir, bool check_crc = true);
// "step_00000123"
std::string step_dir_name(std::int64_t step);
// The step of a "step_N" folder, or nothing for any other name.
std::optional<std::int64_t> step_of(const std::string& dir);

}  // namespace clipper::checkpoint
