#pragma once
// `clipper benchmark`: CLIP_benchmark's zero-shot tasks on its webdataset folders, with its
// metrics, its result JSON ({dataset, model, pretrained, task, metrics, language}) and its file
// naming ({dataset}_{pretrained}_{model}_{language}_{task}.json).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "clipper/eval/benchmark_dataset.hpp"
#include "clipper/eval/eval.hpp"
#include "clipper/eval/linear_probe.hpp"
#include "clipper/model/clip.hpp"

namespace clipper::tokenizer {
class Tokenizer;
}
namespace clipper::dist {
class ProcessGroup;
}

namespace clipper::eval {

// Class embeddings already computed in this evaluation, by (class names, templates): datasets that
// share them (ImageNet, ImageNet-V2 and ImageNet-Sketch: 1,000 classes x 80 templates) embed them
// once. Only valid while the weights do not change: run_suite and each evaluation of a training
// run make a fresh one.
struct ClassifierCache {
  std::map<std::string, at::Tensor> by_classes;
  std::int64_t reused = 0;  // lookups answered from the cache
  // Kept between runs (`clipper benchmark --text-cache DIR`): DIR/<weights>-<texts>.safetensors,
  // named by CRC-32s of the weights (weights_key) and of the tokenizer, precision, class names and
  // templates. Empty: memory only.
  std::string disk_dir;
  std::string weights_key;  // text_cache_weights_key(model): set with disk_dir
  std::int64_t loaded = 0;  // lookups answered from disk_dir
};

// "<size>-<crc32>" of every parameter and buffer of `model` (read from the device once).
std::string text_cache_weights_key(const model::ClipImpl& model);

struct BenchmarkOptions {
  std::string split = "test";
  std::vector<std::int64_t> recall_k{1, 5, 10};
  ReaderOptions reader;  // image_size is taken from the model
  // Classification folders: a linear probe (task linear_probe) instead of zero-shot, trained on
  // the features of `train_split`, `val_proportion` of it held out to choose the weight decay.
  bool linear_probe = false;
  std::string train_split = "train";
  double val_proportion = 0;
  LinearProbeOptions lp;
  std::shared_ptr<ClassifierCache> classifiers;  // null: every dataset embeds its classes
  std::string text_cache_dir;                    // run_suite: ClassifierCache::disk_dir ("": none)
};

struct BenchmarkResult {
  std::string dataset;  // "wds/NAME"
  std::string task;     // "zeroshot_classification" | "zeroshot_retrieval" | "linear_probe"
  nlohmann::ordered_json metrics;
  std::int64_t samples = 0;
  double seconds = 0;
};

// Runs `dataset`'s task (classification and multilabel: zeroshot_classification, or linear_probe
// when asked; retrieval: zeroshot_retrieval) on `model` in eval mode, fp32 features.
// With `pg` of several ranks every rank calls it: each reads and encodes its own share of the
// split (sample j: rank j % size) and of the class embeddings, with no collective inside its
// loop, so unequal shares cannot hang; then the class embeddings once, and the scores (features
// for retrieval and the linear probe) once, are gathered into the split's order, and every rank
// computes the same metrics over the whole split, equal to one process's.
BenchmarkResult run_benchmark(model::ClipImpl& model, const tokenizer::Tokenizer& tok,
                              at::Device device, const Prepare& prepare,
                              const BenchmarkDataset& dataset, const BenchmarkOptions& options,
                              dist::ProcessGroup& pg);
// One process.
BenchmarkResult run_benchmark(model::ClipImpl& model, const tokenizer::Tokenizer& tok,
                              at::Device device, const Prepare& prepare,
                              const BenchmarkDataset& dataset, const BenchmarkOptions& options);

// The JSON CLIP_benchmark's `eval` writes for one result (acc5 of fewer than 5 classes: null,
// where CLIP_benchmark writes NaN).
nlohmann::ordered_json result_json(const BenchmarkResult& r, const std::string& model,
                                   const std::string& pretrained, const std::string& language);
// CLIP_benchmark's default output name: {dataset}_{pretrained}_{model}_{language}_{task}.json,
// the dataset without its "wds/" and with '/' as '_', `pretrained` the weights' base name.
std::string result_file_name(const BenchmarkResult& r, const std::string& model,
                             const std::string& pretrained, const std::string& language);

struct SuiteTask {
  std::string name;         // as the suite reports it ("ImageNet 1k"); a list file: the folder name
  std::string folder;       // the dataset folder
  std::string main_metric;  // the metric the suite scores ("acc1", "mean_recall@1"); may be empty
  std::string skip;         // why the task is not run; empty: run
  GroupEval evaluator = GroupEval::none;  // `evaluator:` DataComp's metrics for the task
  bool linear_probe = false;              // `task: linear_probe` (a classification folder)
  std::string train_split;                // `train_split:` the probe's training split
};
// `options` as `task` asks: its linear probe and training split, if it names them.
BenchmarkOptions task_options(const BenchmarkOptions& options, const SuiteTask& task);
struct Suite {
  std::string name;
  std::vector<SuiteTask> tasks;
  std::vector<std::pair<std::string, std::vector<std::string>>> groups;  // name -> task names
};

// A suite: a list file (one dataset folder per line, relative to the file's folder, '#' comments
// and blank lines ignored), or a YAML file (`suite`, `tasks: [{name, folder, main_metric, skip,
// evaluator, task: zeroshot|linear_probe, train_split}]`,
// `groups: {NAME: [task names]}`) whose folders are under `dataset_root` (default: the file's
// folder). `path` may also name a built-in suite: "datacomp" (configs/benchmark/datacomp.yaml).
// A YAML task whose folder does not exist is skipped with that reason.
Suite read_suite(const std::string& path, const std::string& dataset_root = "");

// The value of `metric` in a result's metrics; "mean_recall@1" is the mean of image and text
// recall@1 (DataComp's retrieval score). nullopt when the result has no such metric.
std::optional<double> metric_value(const nlohmann::ordered_json& metrics,
                                   const std::string& metric);
// DataComp's aggregate_scores.py over `scores` (task name -> main metric): each group's mean over
// its tasks, and "Average" over every scored task; each as {"score", "tasks", "of"}: a group whose
// tasks did not all run is the mean of those that did, `tasks` of `of`.
nlohmann::ordered_json aggregate_scores(const Suite& suite,
                                        const std::vector<std::pair<std::string, double>>& scores);

// A suite ready to run: every folder it runs opened (its metadata checked) before a model loads.
struct SuitePlan {
  Suite suite;
  std::vector<std::pair<SuiteTask, BenchmarkDataset>> run;
  std::vector<SuiteTask> skipped;
};
// `folders` (--dataset) first, then `suite`'s tasks; InputError when there is nothing to run.
SuitePlan plan_suite(const std::vector<std::string>& folders, Suite suite,
                     const DatasetOverrides& overrides);

// How results are named and where they go (CLIP_benchmark's fields).
struct ResultNaming {
  std::string model, pretrained, language = "en", out_dir = ".";
};
struct SuiteReport {
  std::vector<BenchmarkResult> results;
  nlohmann::ordered_json summary;  // what benchmark_summary.json holds
};
// Runs every task of `plan` (on every rank of `pg`, as run_benchmark), and rank 0 writes each
// result's JSON into naming.out_dir (made when missing) as it finishes, then
// benchmark_summary.json: {model, pretrained, suite, results: [result JSON + name, main_metric,
// samples, seconds, images_per_s, file], skipped: [{task, reason}], aggregates}. Every rank
// returns the results.
SuiteReport run_suite(model::ClipImpl& model, const tokenizer::Tokenizer& tok, at::Device device,
                      const Prepare& prepare, const SuitePlan& plan,
                      const BenchmarkOptions& options, const ResultNaming& naming,
                      dist::ProcessGroup& pg);
// The summary's aggregates as lines ("VTAB: 0.5123 (13 of 13 tasks)"); empty without any.
std::string aggregates_text(const nlohmann::ordered_json& summary);

// The console table: one row per dataset, its task and its metrics.
std::string results_table(const std::vector<BenchmarkResult>& results);

}  // namespace clipper::eval
