// clipper train CONFIG... [--set k=v]... [--resume latest|PATH]
#include "verbs.hpp"

#include <iostream>
#include <memory>

#include "clipper/config/loader.hpp"
#include "clipper/trainer/trainer.hpp"
#include "run_command.hpp"

namespace clipper::cli {
namespace {

void setup_train_verb(CLI::App& app, Action* action) {
  struct Args {
    std::vector<std::string> files, sets;
    std::string resume;
  };
  auto a = std::make_shared<Args>();
  auto* verb = app.add_subcommand("train", "Train a CLIP/SigLIP model from YAML configs");
  verb->add_option("configs", a->files, "YAML config files, later ones win")
      ->required()
      ->check(CLI::ExistingFile);
  verb->add_option("--set", a->sets, "override a key: --set optim.lr=0.001 (repeatable)");
  verb->add_option("--resume", a->resume,
                   "latest (newest valid checkpoint of the run) or a checkpoint folder");
  verb->footer(
      "Exit codes: 0 finished; 75 stopped by a signal, the wall-time limit or train.stop_at_step "
      "after "
      "saving a checkpoint (run again with --resume latest); 1 error; 2 usage.");
  verb->callback([a, action] {
    *action = [a] {
      auto cfg = config::load(a->files, a->sets);
      if (!a->resume.empty()) cfg.checkpoint.resume = a->resume;
      trainer::TrainerOptions o;
      o.command = started_command();  // the launcher's, torchrun's or this one
      return trainer::run_training(cfg, o).exit_code;
    };
  });
}

}  // namespace

CLIPPER_REGISTER_VERB(train, setup_train_verb);

}  // namespace clipper::cli
