// clipper caption [--model NAME] --weights PATH [generation options] IMAGES...
#include "verbs.hpp"

#include <ATen/ATen.h>

#include <iostream>
#include <memory>

#include "clipper/core/error.hpp"
#include "clipper/data/image.hpp"
#include "clipper/eval/embed.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/model/caption.hpp"
#include "clipper/session/session.hpp"
#include "clipper/tokenizer/tokenizer.hpp"

namespace clipper::cli {
namespace {

struct CaptionArgs {
  std::string model, weights, method = "beam_search", transparency = "white";
  config::Device device = config::Device::automatic;
  std::vector<std::string> images;
  std::int64_t batch = 16;
  bool ids = false;
  model::CaptionOptions o;
};

void add_generation_options(CLI::App* v, CaptionArgs& a) {
  v->add_option("--method", a.method, "beam_search, top_k or top_p (open_clip's generation_type)")
      ->capture_default_str();
  v->add_option("--seq-len", a.o.seq_len, "longest caption in tokens, start included")
      ->capture_default_str();
  v->add_option("--max-seq-len", a.o.max_seq_len, "tokens the decoder sees (sampling)")
      ->capture_default_str();
  v->add_option("--min-seq-len", a.o.min_seq_len, "no end of text before this many tokens")
      ->capture_default_str();
  v->add_option("--top-k", a.o.top_k, "top_k: tokens kept (1: greedy)")->capture_default_str();
  v->add_option("--top-p", a.o.top_p, "top_p: probability mass kept")->capture_default_str();
  v->add_option("--temperature", a.o.temperature, "sampling temperature")->capture_default_str();
  v->add_option("--num-beams", a.o.num_beams, "beam_search: beams")->capture_default_str();
  v->add_option("--num-beam-groups", a.o.num_beam_groups, "beam_search: groups of beams")
      ->capture_default_str();
  v->add_option("--repetition-penalty", a.o.repetition_penalty, "transformers' penalty")
      ->capture_default_str();
  v->add_option("--seed", a.o.seed, "sampling seed")->capture_default_str();
}

int run_caption(const CaptionArgs& a) {
  auto o = a.o;
  const auto method = model::parse_caption_method(a.method);
  if (!method)
    throw core::InputError("caption: --method must be beam_search, top_k or top_p, got '" +
                           a.method + "'");
  o.method = *method;
  config::Config cfg;
  cfg.model.name = a.model;
  cfg.train.device = a.device;
  session::SessionOptions so;
  so.weights = io::resolve_weights(a.weights);
  so.make_tokenizer = tokenizer::make_model_tokenizer;
  auto s = session::open_session(cfg, so);
  tokenizer::Tokenizer::RowIds special{};
  try {
    special = s.tokenizer->row_ids();
  } catch (const core::InputError& e) {
    throw core::InputError("caption: the model's tokenizer is '" + s.spec.tokenizer +
                           "': " + e.what());
  }
  o.sot_id = special.start;
  o.eos_id = special.end;
  o.pad_id = s.spec.text_pad_id;
  o.validate();
  const auto t = data::parse_transparency(a.transparency, "caption: --transparency");
  for (std::size_t start = 0; start < a.images.size(); start += static_cast<std::size_t>(a.batch)) {
    const auto end = std::min(a.images.size(), start + static_cast<std::size_t>(a.batch));
    const std::vector<std::string> part(a.images.begin() + static_cast<std::ptrdiff_t>(start),
                                        a.images.begin() + static_cast<std::ptrdiff_t>(end));
    const auto ids =
        model::generate_captions(*s.model, eval::load_images(s.spec, part, s.device, t), o).cpu();
    for (std::size_t i = 0; i < part.size(); ++i) {
      const auto row = ids[static_cast<std::int64_t>(i)];
      const std::vector<std::int64_t> v(row.data_ptr<std::int64_t>(),
                                        row.data_ptr<std::int64_t>() + row.numel());
      std::cout << part[i] << "\t" << s.tokenizer->caption(v);
      if (a.ids)
        for (std::size_t k = 0; k < v.size(); ++k) std::cout << (k == 0 ? "\t" : " ") << v[k];
      std::cout << "\n";
    }
  }
  return 0;
}

void setup_caption_verb(CLI::App& app, Action* action) {
  auto a = std::make_shared<CaptionArgs>();
  auto* v = app.add_subcommand(
      "caption", "Caption images with a CoCa model (open_clip's generate; one line per image)");
  v->add_option("--model", a->model,
                "architecture name or .yaml file (default: the model the weights record)");
  v->add_option("--weights", a->weights, "an export folder, a checkpoint folder or a weights file")
      ->required();
  v->add_option("images", a->images, "image files")->required()->check(CLI::ExistingFile);
  v->add_option("--batch", a->batch, "images per generate call")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  v->add_flag("--ids", a->ids, "also print the generated token ids");
  add_choice_option(v, "--device", a->device, "auto, cpu or cuda");
  v->add_option("--transparency", a->transparency,
                "transparent pixels: as `clipper embed --transparency`")
      ->capture_default_str();
  add_generation_options(v, *a);
  v->callback([a, action] { *action = [a] { return run_caption(*a); }; });
}

}  // namespace

CLIPPER_REGISTER_VERB(caption, setup_caption_verb);

}  // namespace clipper::cli
