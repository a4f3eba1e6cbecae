// clipper benchmark --weights PATH (--dataset DIR... | --suite FILE) [--output-dir DIR]
#include <sys/stat.h>

#include <iostream>
#include <memory>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/eval/benchmark.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/model/image_normalizer.hpp"
#include "clipper/session/session.hpp"
#include "clipper/tokenizer/tokenizer.hpp"
#include "verbs.hpp"

namespace clipper::cli {
namespace {

struct BenchmarkArgs {
  std::string model, weights, suite, dataset_root, out_dir = ".", language = "en",
                                                   transparency = "white";
  std::vector<std::string> datasets;
  eval::DatasetOverrides overrides;
  eval::BenchmarkOptions options;
  config::Device device = config::Device::automatic;
};

// mkdir -p; a failure shows when the first result is written, naming the file.
void make_folders(const std::string& dir) {
  for (std::size_t p = dir.find('/', 1);; p = dir.find('/', p + 1)) {
    ::mkdir(dir.substr(0, p).c_str(), 0755);
    if (p == std::string::npos) break;
  }
}

// The datasets to run: --dataset folders, then the suite's tasks.
eval::Suite gather_tasks(const BenchmarkArgs& a) {
  eval::Suite suite;
  if (!a.suite.empty()) suite = eval::read_suite(a.suite, a.dataset_root);
  std::vector<eval::SuiteTask> tasks;
  for (const auto& f : a.datasets) tasks.push_back({f, f, "", ""});
  tasks.insert(tasks.end(), suite.tasks.begin(), suite.tasks.end());
  suite.tasks = std::move(tasks);
  if (suite.tasks.empty())
    throw core::InputError("benchmark: give --dataset DIR (repeatable) or --suite FILE");
  return suite;
}

int run_benchmark_verb(const BenchmarkArgs& a) {
  const auto suite = gather_tasks(a);
  std::vector<std::pair<const eval::SuiteTask*, eval::BenchmarkDataset>> todo;
  nlohmann::ordered_json skipped = nlohmann::ordered_json::array();
  for (const auto& t : suite.tasks) {  // every folder checked before the model loads
    if (!t.skip.empty()) {
      skipped.push_back({{"task", t.name}, {"reason", t.skip}});
      std::cout << "skipping " << t.name << ": " << t.skip << "\n";
      continue;
    }
    todo.emplace_back(&t, eval::open_benchmark_dataset(t.folder, a.overrides));
  }
  make_folders(a.out_dir);

  config::Config cfg;
  cfg.model.name = a.model;
  cfg.train.device = a.device;
  session::SessionOptions so;
  so.weights = io::resolve_weights(a.weights);
  so.make_tokenizer = tokenizer::make_tokenizer;
  auto s = session::open_session(cfg, so);
  const model::ImageNormalizer prepare(s.spec, s.device);
  auto options = a.options;
  options.reader.transparency =
      data::parse_transparency(a.transparency, "benchmark: --transparency");

  std::vector<eval::BenchmarkResult> results;
  std::vector<std::pair<std::string, double>> scores;
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const auto& [task, d] : todo) {
    results.push_back(eval::run_benchmark(*s.model, *s.tokenizer, s.device, prepare, d, options));
    const auto& r = results.back();
    const auto j = eval::result_json(r, s.spec.name, a.weights, a.language);
    const auto file =
        a.out_dir + "/" + eval::result_file_name(r, s.spec.name, a.weights, a.language);
    core::write_file_atomic(file, j.dump() + "\n");
    auto row = j;
    row["name"] = task->name;
    if (!task->main_metric.empty()) {
      const auto v = eval::metric_value(r.metrics, task->main_metric);
      row["main_metric"] = v ? nlohmann::ordered_json(*v) : nlohmann::ordered_json();
      if (v) scores.emplace_back(task->name, *v);
    }
    row["samples"] = r.samples;
    row["seconds"] = r.seconds;
    row["images_per_s"] = r.seconds > 0 ? static_cast<double>(r.samples) / r.seconds : 0.0;
    row["file"] = file;
    rows.push_back(row);
    std::cout << "wrote " << file << " (" << r.samples << " samples, " << r.seconds << " s)\n";
  }
  nlohmann::ordered_json summary;
  summary["model"] = s.spec.name;
  summary["pretrained"] = a.weights;
  if (!suite.name.empty()) summary["suite"] = suite.name;
  summary["results"] = rows;
  summary["skipped"] = skipped;
  if (!suite.groups.empty() || !scores.empty())
    summary["aggregates"] = eval::aggregate_scores(suite, scores);
  core::write_file_atomic(a.out_dir + "/benchmark_summary.json", summary.dump(2) + "\n");
  std::cout << eval::results_table(results);
  if (summary.contains("aggregates"))
    for (auto it = summary["aggregates"].begin(); it != summary["aggregates"].end(); ++it)
      std::cout << it.key() << ": "
                << (it.value()["score"].is_null()
                        ? std::string("n/a")
                        : std::to_string(it.value()["score"].get<double>()))
                << " (" << it.value()["tasks"] << " of " << it.value()["of"] << " tasks)\n";
  return 0;
}

void setup_benchmark_verb(CLI::App& app, Action* action) {
  auto a = std::make_shared<BenchmarkArgs>();
  auto* v = app.add_subcommand(
      "benchmark",
      "CLIP_benchmark's zero-shot classification and retrieval on its webdataset folders");
  v->add_option("--weights", a->weights, "an export folder, a checkpoint folder or a weights file")
      ->required();
  v->add_option("--model", a->model,
                "architecture name or .yaml file (default: the model the weights record)");
  v->add_option("--dataset", a->datasets, "a CLIP_benchmark webdataset folder (repeatable)");
  v->add_option("--suite", a->suite,
                "a file listing dataset folders (one per line), a YAML suite, or a built-in "
                "suite: datacomp");
  v->add_option("--dataset-root", a->dataset_root,
                "where a YAML suite's folders are (default: the suite file's folder)");
  v->add_option("--output-dir", a->out_dir,
                "where the result JSONs ({dataset}_{pretrained}_{model}_{language}_{task}.json) "
                "and benchmark_summary.json go")
      ->capture_default_str();
  v->add_option("--split", a->options.split, "the split to evaluate")->capture_default_str();
  v->add_option("--recall-k", a->options.recall_k, "retrieval: the k of recall@k")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  v->add_option("--classnames", a->overrides.classnames,
                "class names for folders without classnames.txt (or to replace it): a file, one "
                "per line, or imagenet1k (OpenAI's ImageNet names)");
  v->add_option("--templates", a->overrides.templates,
                "templates ({c} for the class name) replacing the folder's: a file, one per line, "
                "or imagenet1k (OpenAI's 80)");
  v->add_option("--language", a->language, "the language named in the results")
      ->capture_default_str();
  v->add_option("--batch", a->options.reader.batch_size, "images per batch")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  v->add_option("--threads", a->options.reader.threads, "image decode threads")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  v->add_option("--transparency", a->transparency,
                "transparent pixels: over white, black or #RRGGBB, or drop")
      ->capture_default_str();
  add_choice_option(v, "--device", a->device, "auto, cpu or cuda");
  auto& lp = a->options;
  v->add_flag("--linear-probe", lp.linear_probe,
              "classification folders: a linear probe on the train split's features instead of "
              "zero-shot (task linear_probe)");
  v->add_option("--train-split", lp.train_split, "linear probe: the training split")
      ->capture_default_str();
  v->add_option("--val-proportion", lp.val_proportion,
                "linear probe: the share of the training split held out to choose the weight "
                "decay (0: no sweep, weight decay 0)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.9));
  v->add_option("--fewshot-k", lp.lp.fewshot_k, "linear probe: shots per class (-1: all)")
      ->capture_default_str();
  v->add_option("--fewshot-epochs", lp.lp.epochs, "linear probe: epochs")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  v->add_option("--fewshot-lr", lp.lp.lr, "linear probe: learning rate")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  v->add_option("--seed", lp.lp.seed, "linear probe: seed")->capture_default_str();
  v->callback([a, action] { *action = [a] { return run_benchmark_verb(*a); }; });
}

}  // namespace

CLIPPER_REGISTER_VERB(benchmark, setup_benchmark_verb);

}  // namespace clipper::cli
