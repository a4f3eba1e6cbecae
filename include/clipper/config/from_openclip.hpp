#pragma once
// `clipper config from-openclip -- FLAGS...`: OpenCLIP 3.3.0's training flags
// (open_clip_train/params.py) as the equivalent clipper configuration. Parsed as argparse does
// (--flag value, --flag=value, unique prefixes, lists); OpenCLIP's defaults for what the flags
// leave out are written too where they differ from clipper's (warmup 10000, epochs 32, no local
// loss, ...). Every flag clipper cannot honour is listed with the reason, never dropped.
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "clipper/config/schema.hpp"

namespace clipper::config {

struct FromOpenClipOptions {
  // OpenCLIP counts saves, evaluations and the cooldown in epochs, clipper in steps: with this
  // (train_num_samples / (batch_size x world size x accum_freq)) they are converted; without it
  // they are listed.
  std::int64_t steps_per_epoch = 0;
  // The ranks the run will have (the OpenCLIP command does not say): with --train-num-samples
  // and no steps_per_epoch, the steps per epoch are train_num_samples / (batch_size x world_size
  // x accum_freq), rounded down.
  std::int64_t world_size = 0;
  // Whether clipper has an architecture of this name; unset: not checked. An unknown --model
  // stops the translation (InputError with the reason): `clipper train` would refuse it.
  std::function<bool(const std::string&)> known_model;
};

struct OpenClipTranslation {
  std::vector<std::pair<std::string, Value>> keys;  // clipper key and value, in schema order
  std::vector<std::string> not_honoured;            // "--flag VALUE: why"
  std::vector<std::string> notes;                   // honoured, with a difference worth knowing
  std::vector<std::string> to_check;  // values written (or left unset) that need a decision
  std::string command;                // the flags as given, one line

  // The YAML file: the command, not_honoured and notes as comments, the keys by section, then
  // to_check as comments.
  std::string yaml() const;
};

// Throws InputError for what OpenCLIP itself would reject (an unknown flag, a missing or
// malformed value, an argument no flag takes) and for a model clipper does not have
// (options.known_model). What it writes loads as a clipper configuration; a required key it
// cannot fill (data.train_shards from CSV data) is in to_check.
OpenClipTranslation from_openclip(const std::vector<std::string>& args,
                                  const FromOpenClipOptions& options = {});

}  // namespace clipper::config
