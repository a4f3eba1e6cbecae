// clipper probe-patches --weights W (--data DIR | --train SHARDS --test SHARDS) [options]
// A linear probe of the image tower's patch features on shards with regions
// (eval/patch_probe.hpp; data from scripts/make_region_shards.py).
#include <ATen/ATen.h>

#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <set>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/data/loader.hpp"
#include "clipper/eval/eval.hpp"
#include "clipper/eval/patch_probe.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/model/image_normalizer.hpp"
#include "clipper/session/session.hpp"
#include "clipper/tokenizer/tokenizer.hpp"
#include "verbs.hpp"

namespace clipper::cli {
namespace {

struct ProbeArgs {
  std::string model, weights, data, train, test, classes, out, text_key = "txt",
                                                               regions_key = "json";
  config::Device device = config::Device::automatic;
  std::int64_t batch = 256, max_train_images = 0, max_test_images = 0, workers = 2;
  eval::LinearProbeOptions probe{10, 0.01, 256, -1, 0};
};

// DIR/SPLIT's shards as one pattern, from its sizes.json.
std::string split_shards(const std::string& dir, const std::string& split) {
  const std::string path = dir + "/" + split + "/sizes.json";
  std::ifstream in(path);
  if (!in)
    throw core::InputError("probe-patches: " + path +
                           " not found; expected --data DIR with train/ and test/ shard folders "
                           "(scripts/make_region_shards.py), or --train and --test patterns");
  const auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.empty())
    throw core::InputError("probe-patches: " + path + " is not a JSON object of shard sizes");
  std::string names;
  for (const auto& [name, n] : j.items()) names += (names.empty() ? "" : ",") + name;
  return dir + "/" + split + "/" + (j.size() == 1 ? names : "{" + names + "}");
}

eval::PatchSplit read_split(const ProbeArgs& a, session::Session& s, const std::string& shards,
                            std::int64_t max_images) {
  data::LoaderOptions o;
  o.shards = shards;
  o.batch_size = a.batch;
  o.image_size = static_cast<int>(s.spec.image_size);
  o.train = false;
  o.resize_mode = s.spec.resize_mode;
  o.interpolation = s.spec.interpolation;
  o.text_key = a.text_key;
  o.regions_key = a.regions_key;
  o.workers = static_cast<int>(a.workers);
  o.pin_memory = "off";
  data::Loader loader(o, s.tokenizer);
  const model::ImageNormalizer normalize(s.spec, s.device);
  return eval::patch_features(*s.model, loader, normalize, max_images);
}

// --classes' names, else the phrases of the training split, sorted.
std::vector<std::string> class_names(const ProbeArgs& a, const eval::PatchSplit& train) {
  if (!a.classes.empty()) return eval::load_zeroshot_classes(a.classes).classnames;
  std::set<std::string> seen;
  for (const auto& rs : train.regions)
    for (const auto& r : rs) seen.insert(r.phrase);
  if (seen.empty())
    throw core::InputError("probe-patches: the training split has no regions (regions key '" +
                           a.regions_key + "')");
  return {seen.begin(), seen.end()};
}

int run_probe(const ProbeArgs& a) {
  if (a.data.empty() == (a.train.empty() || a.test.empty()))
    throw core::InputError("probe-patches: give --data DIR, or --train and --test shard patterns");
  config::Config cfg;
  cfg.model.name = a.model;
  cfg.train.device = a.device;
  session::SessionOptions so;
  so.weights = io::resolve_weights(a.weights);
  so.make_tokenizer = tokenizer::make_model_tokenizer;
  auto s = session::open_session(cfg, so);
  const auto train = read_split(a, s, a.data.empty() ? a.train : split_shards(a.data, "train"),
                                a.max_train_images);
  const auto test =
      read_split(a, s, a.data.empty() ? a.test : split_shards(a.data, "test"), a.max_test_images);
  const auto classes = class_names(a, train);
  auto labels = [&](const eval::PatchSplit& p) {
    return eval::patch_labels(p.regions, p.keys, p.rows, p.cols, classes).reshape({-1});
  };
  auto rows = [](const eval::PatchSplit& p) {
    return p.features.reshape({-1, p.features.size(2)});
  };
  const auto r = eval::patch_probe(rows(train), labels(train), rows(test), labels(test),
                                   static_cast<std::int64_t>(classes.size()) + 1, a.probe);
  auto j = r.to_json();
  j["weights"] = so.weights;
  j["train_images"] = train.features.size(0);
  j["test_images"] = test.features.size(0);
  j["grid"] = {train.rows, train.cols};
  j["class_names"] = classes;
  std::cout << std::fixed << std::setprecision(4) << "patch probe: accuracy " << r.patch_acc
            << ", mean per-class recall " << r.patch_mean_per_class_recall << ", mean IoU "
            << r.patch_mean_iou << " (" << r.test_patches << " test patches, "
            << 100 * r.background_share << " % background, " << r.classes
            << " classes with background)\n"
            << j.dump(2) << "\n";
  if (!a.out.empty()) core::write_file_atomic(a.out, j.dump(2) + "\n");
  return 0;
}

void setup_probe_verb(CLI::App& app, Action* action) {
  auto a = std::make_shared<ProbeArgs>();
  auto* v = app.add_subcommand(
      "probe-patches",
      "Linear probe of the image tower's patch features on shards with regions: each patch "
      "labelled with the class of the region covering its centre, or background");
  v->add_option("--model", a->model,
                "architecture name or .yaml file (default: the model the weights record)");
  v->add_option("--weights", a->weights, "an export folder, a checkpoint folder or a weights file")
      ->required();
  v->add_option("--data", a->data,
                "folder with train/ and test/ shards and their sizes.json "
                "(scripts/make_region_shards.py)");
  v->add_option("--train", a->train, "training shards (instead of --data)");
  v->add_option("--test", a->test, "test shards (instead of --data)");
  v->add_option("--classes", a->classes,
                "YAML with `classes:` (the region phrases); default: the training split's "
                "phrases, sorted");
  v->add_option("--text-key", a->text_key, "caption member the loader reads")
      ->capture_default_str();
  v->add_option("--regions-key", a->regions_key, "member with the regions")->capture_default_str();
  v->add_option("--max-train-images", a->max_train_images, "0: all")->capture_default_str();
  v->add_option("--max-test-images", a->max_test_images, "0: all")->capture_default_str();
  v->add_option("--batch", a->batch, "pictures per forward")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  v->add_option("--workers", a->workers, "loader threads")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  v->add_option("--epochs", a->probe.epochs, "head training epochs")->capture_default_str();
  v->add_option("--lr", a->probe.lr, "head learning rate (AdamW, cosine)")->capture_default_str();
  v->add_option("--probe-batch", a->probe.batch_size, "patches per head step")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  v->add_option("--seed", a->probe.seed, "head initialisation and shuffle")->capture_default_str();
  v->add_option("--out", a->out, "also write the JSON here");
  add_choice_option(v, "--device", a->device, "auto, cpu or cuda");
  v->callback([a, action] { *action = [a] { return run_probe(*a); }; });
}

}  // namespace

CLIPPER_REGISTER_VERB(probe_patches, setup_probe_verb);

}  // namespace clipper::cli
