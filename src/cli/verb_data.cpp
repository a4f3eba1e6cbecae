// clipper data stats SHARDS [--config CFG...] [--model NAME | --tokenizer SPEC --context-length N]
//     [--decode] [--threads N] [--json]
// What a set of shards holds, read with the loader's own reader (clipper/data/dataset_stats.hpp).
#include <filesystem>
#include <iostream>
#include <memory>

#include "clipper/config/loader.hpp"
#include "clipper/core/error.hpp"
#include "clipper/core/text.hpp"
#include "clipper/data/dataset_stats.hpp"
#include "clipper/eval/benchmark_dataset.hpp"
#include "clipper/model/model_spec.hpp"
#include "clipper/tokenizer/tokenizer.hpp"
#include "verbs.hpp"

namespace clipper::cli {
namespace {

struct StatsArgs {
  std::string shards, model, tokenizer, image_keys, text_key, label_key;
  std::vector<std::string> configs, sets;
  std::int64_t context_length = 0;
  data::DatasetStatsOptions o;
  bool json = false;
};

// The data keys and the tokenizer: flags, else the config (data.*, model.name), else defaults.
void resolve(StatsArgs& a) {
  std::string model = a.model;
  if (!a.configs.empty()) {
    const auto cfg = config::load(a.configs, a.sets);
    if (a.shards.empty()) a.shards = cfg.data.train_shards;
    if (a.image_keys.empty()) a.image_keys = cfg.data.image_keys;
    if (a.text_key.empty()) a.text_key = cfg.data.text_key;
    if (model.empty()) model = cfg.model.name;
  }
  core::require(!a.shards.empty(), "data stats: give SHARDS or a --config with data.train_shards");
  if (!a.image_keys.empty()) {
    a.o.image_keys.clear();
    for (const auto& k : core::split(a.image_keys, ';'))
      if (!core::trim(k).empty()) a.o.image_keys.push_back(core::trim(k));
  }
  if (!a.text_key.empty()) a.o.text_key = a.text_key;
  a.o.label_key = a.label_key;
  if (a.tokenizer.empty() && !model.empty()) {
    const auto spec = model::load_model_spec(model);
    a.tokenizer = spec.tokenizer;
    if (a.context_length == 0) a.context_length = spec.context_length;
  }
  if (a.tokenizer.empty()) a.tokenizer = "clip";
  if (a.context_length == 0) a.context_length = 77;
}

CLI::App* add_stats(CLI::App& data, Action* action) {
  auto a = std::make_shared<StatsArgs>();
  auto* v = data.add_subcommand(
      "stats",
      "Samples, bad samples by kind, image formats and sizes, caption lengths in "
      "characters and tokens");
  v->add_option("shards", a->shards,
                "shard list (any the loader accepts; default: the config's), or a CLIP_benchmark "
                "folder (its splits, samples per class, captions, refused samples)");
  v->add_option("--config", a->configs, "YAML config files: data.* keys and model.name");
  v->add_option("--set", a->sets, "override a config key (repeatable)");
  v->add_option("--model", a->model, "count tokens with this model's tokenizer and context");
  v->add_option("--tokenizer", a->tokenizer, "tokenizer spec: clip | sentencepiece:PATH");
  v->add_option("--context-length", a->context_length, "the context length cut captions to");
  v->add_option("--image-keys", a->image_keys, "image extensions, ';'-separated");
  v->add_option("--text-key", a->text_key, "caption key: txt, or json:FIELD");
  v->add_option("--label-key", a->label_key, "count samples without an integer label as bad");
  v->add_flag("--decode", a->o.decode, "decode every image (finds corrupt ones; slower)");
  v->add_option("--threads", a->o.threads, "shards read at once (0: all cores)")
      ->capture_default_str();
  v->add_option("--progress-every", a->o.progress_every_s, "seconds between progress lines");
  v->add_flag("--json", a->json, "print JSON instead of the report");
  v->callback([a, action] {
    *action = [a] {
      if (!a->shards.empty() && std::filesystem::is_directory(a->shards)) {
        // A CLIP_benchmark folder (classnames.txt, <split>/nshards.txt, ...).
        const auto d = eval::describe_benchmark_folder(a->shards);
        std::cout << (a->json ? d.dump(2) + "\n" : eval::benchmark_folder_text(d));
        return 0;
      }
      resolve(*a);
      const auto counting = tokenizer::make_tokenizer(a->tokenizer, 4096);
      const auto s =
          data::collect_dataset_stats(a->shards, a->o, *counting, a->tokenizer, a->context_length);
      if (a->json)
        std::cout << s.to_json().dump(2) << "\n";
      else
        std::cout << s.to_text();
      return 0;
    };
  });
  return v;
}

void setup_data_verb(CLI::App& app, Action* action) {
  auto* v = app.add_subcommand("data", "Look into datasets (see `clipper data stats --help`)");
  v->require_subcommand(1);
  add_stats(*v, action);
}

}  // namespace

CLIPPER_REGISTER_VERB(data, setup_data_verb);

}  // namespace clipper::cli
