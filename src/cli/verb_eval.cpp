// clipper eval CONFIG... --weights PATH [--set k=v]...
#include "verbs.hpp"

#include <ATen/ATen.h>

#include <filesystem>
#include <iostream>
#include <memory>

#include "clipper/config/loader.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/model/image_normalizer.hpp"
#include "clipper/session/session.hpp"
#include "clipper/tokenizer/tokenizer.hpp"
#include "clipper/trainer/evaluate.hpp"

namespace clipper::cli {
namespace {

// What the log lines call the weights: an export, a checkpoint's step, or the file (never the
// "step 0" of a run that is not training).
std::string weights_label(const std::string& file) {
  const std::filesystem::path p(file);
  const std::string folder = p.parent_path().filename().string();
  if (folder.rfind("step_", 0) == 0 && folder.size() > 5) {
    const auto digits = folder.find_first_not_of('0', 5);
    return "checkpoint step " + (digits == std::string::npos ? "0" : folder.substr(digits));
  }
  if (p.filename() == "open_clip_model.safetensors") return "export " + p.parent_path().string();
  return "weights " + file;
}

void setup_eval_verb(CLI::App& app, Action* action) {
  struct Args {
    std::vector<std::string> files, sets;
    std::string weights;
  };
  auto a = std::make_shared<Args>();
  auto* v = app.add_subcommand("eval", "Zero-shot classification and retrieval of trained weights");
  v->add_option("configs", a->files,
                "YAML config files (eval.*; model.name when the weights do not record theirs)")
      ->required()
      ->check(CLI::ExistingFile);
  v->add_option("--weights", a->weights, "an export folder, a checkpoint folder or a weights file")
      ->required();
  v->add_option("--set", a->sets, "override a key (repeatable)");
  v->callback([a, action] {
    *action = [a] {
      // model.name may be left out: the weights' own model is used (session::open_session).
      const auto cfg = config::load(a->files, a->sets, /*check_required=*/false);
      if (cfg.eval.zeroshot_shards.empty() && cfg.eval.retrieval_shards.empty() &&
          cfg.eval.suite.empty())
        throw core::InputError(
            "nothing to evaluate: set eval.zeroshot_shards, eval.retrieval_shards and/or "
            "eval.suite");
      trainer::check_suite(cfg.eval);
      session::SessionOptions so;
      so.weights = io::resolve_weights(a->weights);
      so.ema_weights = cfg.eval.use_ema;  // a checkpoint's ema.safetensors
      so.make_tokenizer = tokenizer::make_model_tokenizer;
      auto s = session::open_session(cfg, so);
      const model::ImageNormalizer prepare(s.spec, s.device);
      auto settings = trainer::EvalSettings::from(cfg);
      settings.bf16 = s.bf16;  // train.precision, as the run was
      const auto rep = trainer::evaluate(settings, *s.model, s.tokenizer, *s.pg, s.device, prepare,
                                         weights_label(so.weights));
      if (s.rank() == 0)
        for (const auto& [name, value] : rep.scalars) std::cout << name << " " << value << "\n";
      return 0;
    };
  });
}

}  // namespace

CLIPPER_REGISTER_VERB(eval, setup_eval_verb);

}  // namespace clipper::cli
