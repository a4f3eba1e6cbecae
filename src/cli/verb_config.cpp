// clipper config show FILES... [--set k=v]... | clipper config keys
// clipper config from-openclip [--out FILE] [--steps-per-epoch N | --world-size N] -- FLAGS...
#include <algorithm>
#include <iostream>
#include <memory>

#include "clipper/config/from_openclip.hpp"
#include "clipper/config/loader.hpp"
#include "clipper/core/atomic_file.hpp"
#include "clipper/core/log.hpp"
#include "clipper/model/model_spec.hpp"
#include "verbs.hpp"

namespace clipper::cli {

namespace {

struct FromOpenClipArgs {
  std::vector<std::string> flags;
  std::string out;
  std::int64_t steps_per_epoch = 0, world_size = 0;
};

// A model.name `clipper train` accepts: a shipped architecture or a .yaml file.
bool known_model(const std::string& name) {
  const bool file = name.size() > 5 && name.compare(name.size() - 5, 5, ".yaml") == 0;
  const auto known = model::list_model_specs();
  return file || std::find(known.begin(), known.end(), name) != known.end();
}

int run_from_openclip(const FromOpenClipArgs& a) {
  config::FromOpenClipOptions o;
  o.steps_per_epoch = a.steps_per_epoch;
  o.world_size = a.world_size;
  o.known_model = known_model;
  const auto t = config::from_openclip(a.flags, o);
  for (const auto& n : t.not_honoured) CLIPPER_WARN("not carried over: " << n);
  if (a.out.empty()) {
    std::cout << t.yaml();
  } else {
    core::write_file_atomic(a.out, t.yaml());
    CLIPPER_INFO("wrote " << a.out << " (" << t.keys.size() << " keys, " << t.not_honoured.size()
                          << " flag(s) not carried over)");
  }
  for (const auto& c : t.to_check) CLIPPER_WARN("to check: " << c);
  return 0;
}

void setup_from_openclip(CLI::App* verb, Action* action) {
  auto args = std::make_shared<FromOpenClipArgs>();
  auto* cmd = verb->add_subcommand(
      "from-openclip",
      "Translate OpenCLIP 3.3.0 training flags (after --) into a clipper YAML; flags clipper "
      "cannot honour are listed with the reason");
  cmd->add_option("--out", args->out, "write the YAML here (default: standard output)");
  cmd->add_option("--steps-per-epoch", args->steps_per_epoch,
                  "convert OpenCLIP's epoch counts (--save-frequency, --val-frequency, "
                  "--epochs-cooldown) to steps")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--world-size", args->world_size,
                  "the ranks the run will have: with --train-num-samples, gives the steps per "
                  "epoch (train_num_samples / (batch size x world size x accum_freq))")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("flags", args->flags, "OpenCLIP's flags, after --");
  cmd->callback([args, action] { *action = [args] { return run_from_openclip(*args); }; });
}

void setup_config_verb(CLI::App& app, Action* action) {
  auto* verb = app.add_subcommand("config", "Show the effective configuration or list every key");
  verb->require_subcommand(1);

  struct ShowArgs {
    std::vector<std::string> files;
    std::vector<std::string> sets;
    bool no_required = false;
  };
  auto args = std::make_shared<ShowArgs>();
  auto* show =
      verb->add_subcommand("show", "Print the effective config (defaults < files < --set)");
  show->add_option("files", args->files, "YAML config files, later ones win")
      ->check(CLI::ExistingFile);
  show->add_option("--set", args->sets, "override a key: --set optim.lr=0.001 (repeatable)");
  show->add_flag("--partial", args->no_required, "do not require the required keys");
  show->callback([args, action] {
    *action = [args] {
      const auto cfg = config::load(args->files, args->sets, !args->no_required);
      std::cout << config::to_yaml(cfg);
      return 0;
    };
  });

  setup_from_openclip(verb, action);

  auto* keys = verb->add_subcommand("keys", "List every key with its type, default and help");
  keys->callback([action] {
    *action = [] {
      std::cout << config::describe_keys();
      return 0;
    };
  });
}

}  // namespace

CLIPPER_REGISTER_VERB(config, setup_config_verb);

}  // namespace clipper::cli
