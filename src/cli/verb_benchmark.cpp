// clipper benchmark --weights PATH (--dataset DIR... | --suite FILE) [--output-dir DIR]
#include <iostream>
#include <memory>

#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/eval/benchmark.hpp"
#include "clipper/eval/precision.hpp"
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
  config::Precision precision = config::Precision::automatic;
};

int run_benchmark_verb(const BenchmarkArgs& a) {
  // Every folder is opened before the model loads: a typo fails in a second.
  const auto plan = eval::plan_suite(
      a.datasets, a.suite.empty() ? eval::Suite{} : eval::read_suite(a.suite, a.dataset_root),
      a.overrides);
  config::Config cfg;
  cfg.model.name = a.model;
  cfg.train.device = a.device;
  cfg.train.precision = a.precision;
  session::SessionOptions so;
  so.weights = io::resolve_weights(a.weights);
  so.make_tokenizer = tokenizer::make_model_tokenizer;
  auto s = session::open_session(cfg, so);
  const model::ImageNormalizer prepare(s.spec, s.device);
  auto options = a.options;
  options.reader.transparency =
      data::parse_transparency(a.transparency, "benchmark: --transparency");
  const eval::EvalPrecision precision(s.bf16, s.device.type());
  if (s.bf16) CLIPPER_INFO("benchmark under bf16 autocast (--precision fp32 for full precision)");
  const auto report = eval::run_suite(*s.model, *s.tokenizer, s.device, prepare, plan, options,
                                      {s.spec.name, a.weights, a.language, a.out_dir}, *s.pg);
  if (s.rank() == 0)
    std::cout << eval::results_table(report.results) << eval::aggregates_text(report.summary);
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
  v->add_flag("!--no-decode-overlap", a->options.reader.overlap,
              "decode and encode in turn instead of decoding the next batch while the model "
              "encodes the current one (the same figures; for measuring the overlap)");
  v->add_option("--transparency", a->transparency,
                "transparent pixels: over white, black or #RRGGBB, or drop")
      ->capture_default_str();
  add_choice_option(v, "--device", a->device, "auto, cpu or cuda");
  v->add_option("--text-cache", a->options.text_cache_dir,
                "a folder keeping the class embeddings between runs (per weights, tokenizer, "
                "precision, class names and templates)");
  add_choice_option(v, "--precision", a->precision,
                    "auto (bf16 autocast on CUDA, as CLIP_benchmark's --amp), bf16 or fp32");
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
