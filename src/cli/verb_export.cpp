// clipper export CHECKPOINT --format openclip|hf --out DIR [--model NAME] [--ema]
//   [--hf-class auto|CLIPModel|SiglipModel|Siglip2Model]
#include <memory>
#include <optional>

#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/io/hf_export.hpp"
#include "clipper/io/hf_siglip.hpp"
#include "clipper/io/openclip.hpp"
#include "verbs.hpp"
#ifdef CLIPPER_WITH_TOKENIZER
#include "clipper/tokenizer/hf_files.hpp"
#include "clipper/tokenizer/tokenizer.hpp"
#endif

namespace clipper::cli {
namespace {

struct Args {
  std::string checkpoint, format = "openclip", out, model, hf_class = "auto";
  bool ema = false;
};

// --hf-class: auto is CLIPModel for OpenCLIP's towers, SiglipModel for a timm (SigLIP) trunk.
io::HfClass hf_class(const Args& a, const model::ModelSpec& spec) {
  if (a.hf_class == "auto") return io::default_hf_class(spec);
  return *io::parse_hf_class(a.hf_class);  // CLI::IsMember checked the word
}

#ifdef CLIPPER_WITH_TOKENIZER
// The tokenizer files beside a SigLIP export. clipper's CLIP BPE: CLIPTokenizer's files (it pads
// with <|endoftext|> where clipper pads with 0: docs/models.md).
void write_siglip_tokenizer(const model::ModelSpec& spec, const std::string& out) {
  if (spec.tokenizer == "clip") {
    tokenizer::write_hf_clip_tokenizer(out, spec.context_length);
    return;
  }
  if (spec.tokenizer.rfind("hf:", 0) == 0) {  // the folder's own files: the same ids
    try {
      tokenizer::copy_hf_tokenizer_files(spec.tokenizer, out);
    } catch (const core::InputError& e) {  // the weights are exported all the same
      CLIPPER_WARN("hf export: no tokenizer files written: " << e.what());
    }
    return;
  }
  CLIPPER_WARN("hf export: no tokenizer files written for tokenizer '"
               << spec.tokenizer << "' (a SentencePiece model of clipper's own layout has no "
               << "Hugging Face tokenizer class; copy a tokenizer folder beside the weights)");
}

// config.json's pad / bos / eos ids from the model's tokenizer; unset where it cannot say (an
// "hf:" tokenizer does not decode): the export guesses them from the vocabulary size.
std::optional<io::HfTextIds> tokenizer_text_ids(const model::ModelSpec& spec) {
  try {
    const auto r = tokenizer::make_tokenizer(spec.tokenizer, spec.context_length)->row_ids();
    return io::HfTextIds{r.pad, r.start, r.end};
  } catch (const core::InputError& e) {
    CLIPPER_INFO("hf export: special token ids guessed from the vocabulary size (" << e.what()
                                                                                   << ")");
    return std::nullopt;
  }
}
#endif

void export_hf(const Args& a) {
  model::ModelSpec spec;
  const auto m = io::load_checkpoint_model(a.checkpoint, a.model, &spec, a.ema);
  const auto cls = hf_class(a, spec);
#ifdef CLIPPER_WITH_TOKENIZER
  if (cls == io::HfClass::clip) {
    io::export_hf(m, spec, a.out);  // refuses what transformers' CLIP cannot express
    tokenizer::write_hf_clip_tokenizer(a.out, spec.context_length);
  } else {
    // refuses what SigLIP cannot express
    io::export_hf_siglip(m, spec, cls, a.out, tokenizer_text_ids(spec));
    write_siglip_tokenizer(spec, a.out);
  }
#else
  if (cls == io::HfClass::clip)
    io::check_hf_exportable(spec);
  else
    io::check_hf_siglip_exportable(spec, cls);
  throw core::InputError(
      "--format hf writes tokenizer files: this clipper was built with CLIPPER_WITH_DATA=OFF");
#endif
}

void setup_export_verb(CLI::App& app, Action* action) {
  auto* verb = app.add_subcommand(
      "export",
      "Write a checkpoint's weights in another format (openclip: open_clip_model.safetensors + "
      "open_clip_config.json; hf: what transformers' CLIPModel, SiglipModel or Siglip2Model "
      "from_pretrained and the tokenizer load)");
  auto args = std::make_shared<Args>();
  verb->add_option("checkpoint", args->checkpoint,
                   "a checkpoint folder (model.safetensors + config.yaml) or a .safetensors file")
      ->required();
  verb->add_option("--format", args->format, "output format")
      ->check(CLI::IsMember({"openclip", "hf"}))
      ->capture_default_str();
  verb->add_option("--out", args->out, "output folder")->required();
  verb->add_option("--hf-class", args->hf_class,
                   "--format hf: the transformers class (auto: CLIPModel for OpenCLIP towers, "
                   "SiglipModel for a timm SigLIP trunk)")
      ->check(CLI::IsMember({"auto", "CLIPModel", "SiglipModel", "Siglip2Model"}))
      ->capture_default_str();
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
