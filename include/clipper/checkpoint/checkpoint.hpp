#pragma once
// Checkpoints: one folder per step under <run>/checkpoints/step_<NNNNNNNN>/, written under a
// temporary name and renamed when complete. A manifest.json written last lists every file with its
// size and CRC-32; a folder without a valid manifest does not exist for resume.
//
//   model.safetensors       model state dict, OpenCLIP names (rank 0)
//   optimizer.safetensors   optimizer state (rank 0)
//   trainer.json            step, epoch, counters, schedule position (rank 0)
//   config.yaml             the effective run config (rank 0)
//   rank_<R>.json           loader position and counters of rank R
//   rank_<R>.safetensors    RNG states of rank R
//   manifest.json           magic, format version, step, world size, files (written last)
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace clipper::checkpoint {

using TensorList = std::vector<std::pair<std::string, at::Tensor>>;

inline constexpr const char* kMagic = "clipper-checkpoint";
inline constexpr int kFormatVersion = 1;

// What one rank contributes to, and gets back from, a checkpoint. Rank 0 alone carries the
// replicated parts (model, optimizer, trainer, config).
struct State {
  TensorList model;
  TensorList optimizer;
  nlohmann::json trainer;
  std::string config_yaml;
  nlohmann::json rank_json;
  TensorList rank_tensors;
};

class Manager {
 public:
  // `barrier` synchronizes all ranks (a no-op for one process).
  Manager(std::string run_dir, int rank, int world_size, std::int64_t keep_last,
          std::function<void()> barrier);

  // Collective: every rank calls it with its State; returns the checkpoint folder.
  std::string save(std::int64_t step, const State& state);
  // The newest checkpoint whose manifest and files check out; invalid ones are skipped with a
  // warning naming what is wrong. Not collective (rank 0 decides; the caller broadcasts the step).
  std::optional<std::string> latest_valid() const;
  const std::string& checkpoints_dir() const { return dir_; }

 private:
  void prune();
  std::string dir_;
  int rank_, world_size_;
  std::int64_t keep_last_;
  std::function<void()> barrier_;
};

// Throws InputError naming the file and the problem when `dir` is not a complete checkpoint.
nlohmann::json validate(const std::string& dir);
// Loads what `rank` needs from a valid checkpoint; checks the world size recorded in it.
State load(const std::string& dir, int rank, int world_size);
// "<run>/checkpoints/step_00000123"
std::string step_dir_name(std::int64_t step);
std::int64_t step_of(const std::string& dir);

}  // namespace clipper::checkpoint
