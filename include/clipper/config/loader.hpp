#pragma once
// Loads the run configuration: defaults < YAML files (in order, later wins) < --set overrides.
// Errors name the file and line, the key, the value and what was expected, and suggest the nearest
// valid key for a misspelled one.
#include <string>
#include <vector>

#include "clipper/config/config.hpp"

namespace clipper::config {

// `overrides` are "a.b=value" strings as given to --set. Checks required keys unless told not to.
Config load(const std::vector<std::string>& files, const std::vector<std::string>& overrides = {},
            bool check_required = true);
// Applies one YAML document (e.g. read back from a run folder); `origin` names it in errors.
void apply_yaml(Config& config, const std::string& yaml_text, const std::string& origin);
// Applies one "a.b=value" override.
void apply_override(Config& config, const std::string& assignment);
// OpenCLIP's AdamW defaults by model family (open_clip_train/params.py, the CLIP paper's values):
// a name containing "vit" (any case): beta2 0.98, eps 1e-6; any other (ResNets, ...): 0.999, 1e-8.
struct AdamWDefaults {
  double beta2, eps;
};
AdamWDefaults adamw_defaults(const std::string& model_name);
// Fills the keys whose default depends on the model (optim.beta2 and optim.eps, when no file or
// --set gave them) from model.name. load() calls it; a Config built in code may call it too.
void resolve_model_defaults(Config& config);
// Throws InputError naming each required key that is still unset.
void check_required(const Config& config);
// The effective configuration as YAML, every key included, in declaration order, with
// credentials in values (pipe: commands, URLs) replaced by *** (core/redact.hpp).
std::string to_yaml(const Config& config);
// Every key with its type, default and help, one per line (for `clipper config keys`).
std::string describe_keys();

}  // namespace clipper::config
