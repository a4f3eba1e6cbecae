// clipper config show FILES... [--set k=v]... | clipper config keys
#include <iostream>
#include <memory>

#include "clipper/config/loader.hpp"
#include "verbs.hpp"

namespace clipper::cli {

namespace {

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
