// clipper eval CONFIG... --weights PATH [--set k=v]...
#include "verbs.hpp"

#if CLIPPER_HAS_LOOP
#include <torch/cuda.h>

#include <ATen/ATen.h>

#include <iostream>
#include <memory>

#include "clipper/config/loader.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/dist/world.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/loop/evaluate.hpp"
#include "clipper/model/image_normalizer.hpp"
#include "clipper/model/model_spec.hpp"
#include "clipper/tokenizer/tokenizer.hpp"

namespace clipper::cli {
namespace {

void setup_eval_verb(CLI::App& app, Action* action) {
  struct Args {
    std::vector<std::string> files, sets;
    std::string weights;
  };
  auto a = std::make_shared<Args>();
  auto* v = app.add_subcommand("eval", "Zero-shot classification and retrieval of trained weights");
  v->add_option("configs", a->files, "YAML config files (model.name, eval.*)")
      ->required()
      ->check(CLI::ExistingFile);
  v->add_option("--weights", a->weights, "an export folder, a checkpoint folder or a weights file")
      ->required();
  v->add_option("--set", a->sets, "override a key (repeatable)");
  v->callback([a, action] {
    *action = [a] {
      const auto cfg = config::load(a->files, a->sets);
      if (cfg.eval.zeroshot_shards.empty() && cfg.eval.retrieval_shards.empty())
        throw core::InputError(
            "nothing to evaluate: set eval.zeroshot_shards and/or eval.retrieval_shards");
      const auto world = dist::discover_world(cfg.dist);
      const bool cuda =
          cfg.train.device == "cuda" || (cfg.train.device == "auto" && torch::cuda::is_available());
      auto pg = dist::ProcessGroup::create(world, cfg.dist, cuda);
      const at::Device device =
          cuda ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(world.local_rank))
               : at::Device(at::kCPU);
      const auto spec = model::load_model_spec(cfg.model.name);
      auto model = model::create_model(spec, 0);
      io::load_openclip_weights(model, loop::resolve_weights(a->weights));
      model->to(device);
      auto tok = tokenizer::make_tokenizer(spec.tokenizer, spec.context_length);
      const model::ImageNormalizer prepare(spec, device);
      const auto rep = loop::evaluate(cfg, *model, tok, *pg, device, prepare, 0);
      if (pg->rank() == 0)
        for (const auto& [name, value] : rep.scalars) std::cout << name << " " << value << "\n";
      return 0;
    };
  });
}

}  // namespace

CLIPPER_REGISTER_VERB(eval, setup_eval_verb);

}  // namespace clipper::cli
#endif
