// clipper export CHECKPOINT --format openclip|hf --out DIR [--model NAME] [--ema]
#include <memory>

#include "clipper/core/error.hpp"
#include "clipper/io/hf_export.hpp"
#include "clipper/io/openclip.hpp"
#include "verbs.hpp"
#ifdef CLIPPER_WITH_TOKENIZER
#include "clipper/tokenizer/hf_files.hpp"
#endif

namespace clipper::cli {
namespace {

struct Args {
  std::string checkpoint, format = "openclip", out, model;
  bool ema = false;
};

void export_hf(const Args& a) {
#ifdef CLIPPER_WITH_TOKENIZER
  model::ModelSpec spec;
  const auto m = io::load_checkpoint_model(a.checkpoint, a.model, &spec, a.ema);
  io::export_hf(m, spec, a.out);  // refuses what transformers' CLIP cannot express
  tokenizer::write_hf_clip_tokenizer(a.out, spec.context_length);
#else
  model::ModelSpec spec;
  io::load_checkpoint_model(a.checkpoint, a.model, &spec, a.ema);
  io::check_hf_exportable(spec);
  throw core::InputError(
      "--format hf writes tokenizer files: this clipper was built with CLIPPER_WITH_DATA=OFF");
#endif
}

void setup_export_verb(CLI::App& app, Action* action) {
  auto* verb = app.add_subcommand(
      "export",
      "Write a checkpoint's weights in another format (openclip: open_clip_model.safetensors + "
      "open_clip_config.json; hf: what transformers' CLIPModel.from_pretrained and "
      "CLIPTokenizer.from_pretrained load, ViT towers only)");
  auto args = std::make_shared<Args>();
  verb->add_option("checkpoint", args->checkpoint,
                   "a checkpoint folder (model.safetensors + config.yaml) or a .safetensors file")
      ->required();
  verb->add_option("--format", args->format, "output format")
      ->check(CLI::IsMember({"openclip", "hf"}))
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
      if (args->format == "hf") {
        export_hf(*args);
      } else {
        io::export_checkpoint_openclip(args->checkpoint, args->model, args->out, args->ema);
      }
      return 0;
    };
  });
}

}  // namespace

CLIPPER_REGISTER_VERB(export, setup_export_verb);

}  // namespace clipper::cli
