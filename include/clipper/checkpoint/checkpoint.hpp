#pragma once
// Checkpoints: one folder per step under <run>/checkpoints/step_<NNNNNNNN>/, written under a
// temporary name and renamed when complete. What goes in is a list of named Stateful parts
// (stateful.hpp): the same list saves and resumes. A manifest.json written last lists every file
// with its size and CRC-32 (computed while writing) and the commit sequence number; a folder
// without a valid manifest does not exist.
//
//   <part>.safetensors / <part>.json   global parts: model, optimizer, trainer (rank 0)
//   rank_<R>.safetensors / .json       per-rank parts of rank R: rng, loader
//   config.yaml                        the effective run config (rank 0)
//   manifest.json                      magic, format version, step, sequence, world size, parts,
//                                      files (written last)
//
// Commit order is the truth: "latest" is the valid checkpoint committed last (highest sequence),
// not the highest step; pruning keeps the newest committed ones. Resuming from an older checkpoint
// sets the ones committed after it aside (checkpoints/abandoned/), so a later "latest" never
// returns to an abandoned branch.
#include <cstdint>
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

struct ManagerOptions {
  std::int64_t keep_last = 3;
  // How long ranks wait for each other inside a save or a load (rank 0 writes the big parts).
  double timeout_s = 1800.0;
};

// A checkpoint found on disk.
struct Found {
  std::string dir;
  std::int64_t step = 0;
  std::int64_t sequence = 0;
};

class Manager {
 public:
  Manager(std::string run_dir, ManagerOptions options, std::shared_ptr<dist::ProcessGroup> pg);

  // Collective: every rank calls it with the same list of parts; returns the checkpoint folder.
  // An error on any rank reaches every rank as an error (no rank waits for a timeout).
  std::string save(std::int64_t step, const Parts& parts, const std::string& config_yaml);
  // Collective: `resume` is "" (nothing), "latest" (the last committed valid checkpoint of this
  // run, decided by rank 0) or a checkpoint folder. Returns the folder every rank will load, or
  // nothing. Checkpoints committed after the chosen one are set aside as an abandoned branch.
  std::optional<std::string> resolve(const std::string& resume);
  // Collective: loads every part from `dir`; each rank checks the CRC of the files it reads.
  void load(const std::string& dir, const Parts& parts) const;

  // Not collective. The last committed checkpoint whose manifest and file sizes check out.
  std::optional<Found> latest_valid() const;
  const std::string& checkpoints_dir() const { return dir_; }

 private:
  void commit(const std::string& tmp, const std::string& final_dir);
  void prune();
  void set_aside_after(const Found& chosen);
  std::string dir_;
  ManagerOptions options_;
  std::shared_ptr<dist::ProcessGroup> pg_;
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
