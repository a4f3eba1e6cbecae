// clipper embed [--model NAME] --weights PATH (--images FILES... | --texts FILE) --out FILE.npy
#include "verbs.hpp"

#include <ATen/ATen.h>

#include <fstream>
#include <iostream>
#include <memory>

#include "clipper/core/error.hpp"
#include "clipper/data/image.hpp"
#include "clipper/eval/embed.hpp"
#include "clipper/io/npy.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/session/session.hpp"
#include "clipper/tokenizer/tokenizer.hpp"

namespace clipper::cli {
namespace {

void setup_embed_verb(CLI::App& app, Action* action) {
  struct Args {
    std::string model, weights, texts, out, transparency = "white";
    config::Device device = config::Device::automatic;
    std::vector<std::string> images;
    std::int64_t batch = 64;
  };
  auto a = std::make_shared<Args>();
  auto* v = app.add_subcommand("embed", "Write normalized image or text embeddings as .npy");
  v->add_option("--model", a->model,
                "architecture name or .yaml file (default: the model the weights record)");
  v->add_option("--weights", a->weights, "an export folder, a checkpoint folder or a weights file")
      ->required();
  auto* img = v->add_option("--images", a->images, "image files")->check(CLI::ExistingFile);
  auto* txt = v->add_option("--texts", a->texts, "a text file, one caption per line")
                  ->check(CLI::ExistingFile);
  img->excludes(txt);
  v->add_option("--out", a->out, "output .npy file (float32 [N, embed_dim])")->required();
  v->add_option("--batch", a->batch, "batch size")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  add_choice_option(v, "--device", a->device, "auto, cpu or cuda");
  v->add_option("--transparency", a->transparency,
                "transparent pixels: composited over white, black or #RRGGBB (white: "
                "transformers' CLIPImageProcessor), drop (PIL's convert(\"RGB\") on the decoded "
                "picture: open_clip_train's loaders), or openclip (open_clip's preprocess on an "
                "RGBA picture: the alpha dropped after the resize)")
      ->capture_default_str();
  v->callback([a, action] {
    *action = [a] {
      if (a->images.empty() && a->texts.empty())
        throw core::InputError("embed: give --images FILES... or --texts FILE");
      config::Config cfg;
      cfg.model.name = a->model;
      cfg.train.device = a->device;
      session::SessionOptions so;
      so.weights = io::resolve_weights(a->weights);
      if (!a->texts.empty())
        so.make_tokenizer = tokenizer::make_model_tokenizer;
      auto s = session::open_session(cfg, so);
      at::Tensor e;
      if (!a->images.empty()) {
        const auto t = data::parse_transparency(a->transparency, "embed: --transparency");
        e = eval::embed_images(*s.model, a->images, a->batch, s.device, t);
      } else {
        std::ifstream in(a->texts);
        std::vector<std::string> lines;
        for (std::string l; std::getline(in, l);) lines.push_back(l);
        e = eval::embed_texts(*s.model, *s.tokenizer, lines, a->batch, s.device);
      }
      io::save_npy(a->out, e);
      std::cout << "wrote " << e.size(0) << " x " << e.size(1) << " embeddings to " << a->out
                << "\n";
      return 0;
    };
  });
}

}  // namespace

CLIPPER_REGISTER_VERB(embed, setup_embed_verb);

}  // namespace clipper::cli
