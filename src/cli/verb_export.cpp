// clipper export CHECKPOINT --format openclip --out DIR [--model NAME] [--ema]
#include <memory>

#include "clipper/core/error.hpp"
#include "clipper/io/openclip.hpp"
#include "verbs.hpp"

namespace clipper::cli {
namespace {

void setup_export_verb(CLI::App& app, Action* action) {
  auto* verb = app.add_subcommand("export",
                                  "Write a checkpoint's weights in another format (openclip: "
                                  "open_clip_model.safetensors + open_clip_config.json)");
  struct Args {
    std::string checkpoint, format = "openclip", out, model;
    bool ema = false;
  };
  auto args = std::make_shared<Args>();
  verb->add_option("checkpoint", args->checkpoint,
                   "a checkpoint folder (model.safetensors + config.yaml) or a .safetensors file")
      ->required();
  verb->add_option("--format", args->format, "output format")
      ->check(CLI::IsMember({"openclip"}))
      ->capture_default_str();
  verb->add_option("--out", args->out, "output folder")->required();
  verb->add_option("--model", args->model,
                   "architecture name or .yaml (required for a bare .safetensors file; overrides "
                   "the checkpoint's config.yaml)");
  verb->add_flag("--ema", args->ema,
                 "write the checkpoint's weight average (ema.safetensors, train.ema_decay) "
                 "instead of its weights");
  verb->callback([action, args] {
    *action = [args] {
      io::export_checkpoint_openclip(args->checkpoint, args->model, args->out, args->ema);
      return 0;
    };
  });
}

}  // namespace

CLIPPER_REGISTER_VERB(export, setup_export_verb);

}  // namespace clipper::cli
