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
// Throws InputError naming each required key that is still unset.
void check_required(const Config& config);
// The effective configuration as YAML, every key included, in declaration order, with
// credentials in values (pipe: commands, URLs) replaced by *** (core/redact.hpp).
std::string to_yaml(const Config& config);
// Every key with its type, default and help, one per line (for `clipper config keys`).
std::string describe_keys();

}  // namespace clipper::config
