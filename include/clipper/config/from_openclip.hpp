#pragma once
// `clipper config from-openclip -- FLAGS...`: OpenCLIP 3.3.0's training flags
// (open_clip_train/params.py) as the equivalent clipper configuration. Parsed as argparse does
// (--flag value, --flag=value, unique prefixes, lists); OpenCLIP's defaults for what the flags
// leave out are written too where they differ from clipper's (warmup 10000, epochs 32, no local
// loss, ...). Every flag clipper cannot honour is listed with the reason, never dropped.
#include <cstdint>
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
};

struct OpenClipTranslation {
  std::vector<std::pair<std::string, Value>> keys;  // clipper key and value, in schema order
  std::vector<std::string> not_honoured;            // "--flag VALUE: why"
  std::vector<std::string> notes;                   // honoured, with a difference worth knowing
  std::string command;                              // the flags as given, one line

  // The YAML file: the command, not_honoured and notes as comments, then the keys by section.
  std::string yaml() const;
};

// Throws InputError for what OpenCLIP itself would reject (an unknown flag, a missing or
// malformed value, an argument no flag takes).
OpenClipTranslation from_openclip(const std::vector<std::string>& args,
                                  const FromOpenClipOptions& options = {});

}  // namespace clipper::config
