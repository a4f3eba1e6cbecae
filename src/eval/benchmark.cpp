#include "clipper/eval/benchmark.hpp"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <iomanip>
#include <sstream>

#include "clipper/core/error.hpp"
#include "clipper/core/progress.hpp"
#include "clipper/eval/embed.hpp"
#include "clipper/eval/metrics.hpp"
#include "clipper/tokenizer/tokenizer.hpp"

namespace clipper::eval {
namespace {

// Restores the model's training flag on the way out.
struct EvalMode {
  explicit EvalMode(model::ClipImpl& m) : model(m), was_training(m.is_training()) { m.eval(); }
  ~EvalMode() { model.train(was_training); }
  model::ClipImpl& model;
  bool was_training;
};

at::Tensor image_features(model::ClipImpl& model, const Prepare& prepare, const BenchmarkBatch& b) {
  return model.encode_image(prepare(b.images), /*normalize=*/true).to(at::kFloat).cpu();
}

nlohmann::ordered_json classification(model::ClipImpl& model, const tokenizer::Tokenizer& tok,
                                      at::Device device, const Prepare& prepare,
                                      const BenchmarkDataset& d, BenchmarkReader& reader) {
  const auto classifier =
      zeroshot_classifier(model, tok, {d.classnames, d.templates}, device).to(at::kFloat).cpu();
  std::vector<at::Tensor> logits, truth;
  core::Progress progress("benchmark " + d.name, -1, "samples");
  while (auto b = reader.next()) {
    logits.push_back(image_features(model, prepare, *b).matmul(classifier.t()));
    truth.push_back(d.kind == DatasetKind::multilabel ? b->multilabels : b->labels);
    progress.update(reader.samples());
  }
  if (logits.empty()) throw core::InputError("dataset '" + d.root + "': the split has no sample");
  const auto L = at::cat(logits), T = at::cat(truth);
  nlohmann::ordered_json m;
  if (d.kind == DatasetKind::multilabel) {
    m["mean_average_precision"] = mean_average_precision(L, T);
    return m;
  }
  const auto c = classification_metrics(L, T);
  m["acc1"] = c.acc1;
  m["acc5"] = c.acc5 ? nlohmann::ordered_json(*c.acc5) : nlohmann::ordered_json();
  m["mean_per_class_recall"] = c.mean_per_class_recall;
  return m;
}

nlohmann::ordered_json retrieval(model::ClipImpl& model, const tokenizer::Tokenizer& tok,
                                 at::Device device, const Prepare& prepare,
                                 const BenchmarkDataset& d, BenchmarkReader& reader,
                                 const BenchmarkOptions& o) {
  std::vector<at::Tensor> images, texts;
  std::vector<std::int64_t> owner;
  core::Progress progress("benchmark " + d.name, -1, "samples");
  while (auto b = reader.next()) {
    const auto first = reader.samples() - b->images.size(0);
    std::vector<std::string> captions;
    for (std::size_t i = 0; i < b->captions.size(); ++i)
      for (const auto& c : b->captions[i]) {
        captions.push_back(c);
        owner.push_back(first + static_cast<std::int64_t>(i));
      }
    images.push_back(image_features(model, prepare, *b));
    if (!captions.empty())
      texts.push_back(embed_texts(model, tok, captions, o.reader.batch_size, device));
    progress.update(reader.samples());
  }
  if (images.empty()) throw core::InputError("dataset '" + d.root + "': the split has no sample");
  const auto r = retrieval_metrics(
      at::cat(images), texts.empty() ? at::zeros({0, images[0].size(1)}) : at::cat(texts),
      at::tensor(owner, at::kLong), o.recall_k);
  nlohmann::ordered_json m;
  for (std::size_t i = 0; i < r.ks.size(); ++i) {
    m["image_retrieval_recall@" + std::to_string(r.ks[i])] = r.image_retrieval[i];
    m["text_retrieval_recall@" + std::to_string(r.ks[i])] = r.text_retrieval[i];
  }
  return m;
}

// Normalized image features and labels of every sample of `split`.
std::pair<at::Tensor, at::Tensor> split_features(model::ClipImpl& model, const Prepare& prepare,
                                                 const BenchmarkDataset& d,
                                                 const std::string& split, ReaderOptions ro) {
  BenchmarkReader reader(d, split, ro);
  std::vector<at::Tensor> x, y;
  core::Progress progress("features " + d.name + " " + split, -1, "samples");
  while (auto b = reader.next()) {
    x.push_back(image_features(model, prepare, *b));
    y.push_back(b->labels);
    progress.update(reader.samples());
  }
  if (x.empty())
    throw core::InputError("dataset '" + d.root + "': the " + split + " split has no sample");
  return {at::cat(x), at::cat(y)};
}

nlohmann::ordered_json linear_probe_task(model::ClipImpl& model, const Prepare& prepare,
                                         const BenchmarkDataset& d, const BenchmarkOptions& o,
                                         const ReaderOptions& ro, std::int64_t* samples) {
  if (d.kind != DatasetKind::classification)
    throw core::InputError("dataset '" + d.root + "': a linear probe needs a classification " +
                           "folder (.cls labels), this one is " + to_string(d.kind));
  auto [x, y] = split_features(model, prepare, d, o.train_split, ro);
  at::Tensor vx, vy;
  if (o.val_proportion > 0) {  // a seeded random share of the training split
    auto gen = at::detail::createCPUGenerator(o.lp.seed);
    const auto perm = at::randperm(x.size(0), gen, at::kLong);
    const auto n_val = static_cast<std::int64_t>(o.val_proportion * static_cast<double>(x.size(0)));
    vx = x.index_select(0, perm.narrow(0, 0, n_val));
    vy = y.index_select(0, perm.narrow(0, 0, n_val));
    x = x.index_select(0, perm.narrow(0, n_val, x.size(0) - n_val));
    y = y.index_select(0, perm.narrow(0, n_val, y.size(0) - n_val));
  }
  const auto [tx, ty] = split_features(model, prepare, d, o.split, ro);
  *samples = tx.size(0);
  const auto r = linear_probe(x, y, vx, vy, tx, ty, o.lp);
  nlohmann::ordered_json m;
  m["lp_acc1"] = r.metrics.acc1;
  m["lp_acc5"] =
      r.metrics.acc5 ? nlohmann::ordered_json(*r.metrics.acc5) : nlohmann::ordered_json();
  m["lp_mean_per_class_recall"] = r.metrics.mean_per_class_recall;
  m["weight_decay"] = r.weight_decay;
  m["epochs"] = o.lp.epochs;
  m["seed"] = o.lp.seed;
  m["fewshot_k"] = o.lp.fewshot_k;
  m["normalized"] = true;
  return m;
}

std::string slug(std::string s) {
  for (auto& c : s)
    if (c == '/') c = '_';
  return s;
}

}  // namespace

BenchmarkResult run_benchmark(model::ClipImpl& model, const tokenizer::Tokenizer& tok,
                              at::Device device, const Prepare& prepare,
                              const BenchmarkDataset& dataset, const BenchmarkOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  at::NoGradGuard no_grad;
  EvalMode eval_mode(model);
  ReaderOptions ro = options.reader;
  ro.image_size = static_cast<int>(model.spec().image_size);
  BenchmarkResult r;
  r.dataset = dataset.name;
  if (options.linear_probe) {
    r.task = "linear_probe";
    r.metrics = linear_probe_task(model, prepare, dataset, options, ro, &r.samples);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }
  BenchmarkReader reader(dataset, options.split, ro);
  if (dataset.kind == DatasetKind::retrieval) {
    r.task = "zeroshot_retrieval";
    r.metrics = retrieval(model, tok, device, prepare, dataset, reader, options);
  } else {
    r.task = "zeroshot_classification";
    r.metrics = classification(model, tok, device, prepare, dataset, reader);
  }
  r.samples = reader.samples();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

nlohmann::ordered_json result_json(const BenchmarkResult& r, const std::string& model,
                                   const std::string& pretrained, const std::string& language) {
  nlohmann::ordered_json j;
  j["dataset"] = r.dataset;
  j["model"] = model;
  j["pretrained"] = pretrained;
  j["task"] = r.task;
  j["metrics"] = r.metrics;
  j["language"] = language;
  return j;
}

std::string result_file_name(const BenchmarkResult& r, const std::string& model,
                             const std::string& pretrained, const std::string& language) {
  std::string d = r.dataset.rfind("wds/", 0) == 0 ? r.dataset.substr(4) : r.dataset;
  std::string p = pretrained;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  if (const auto s = p.rfind('/'); s != std::string::npos) p = p.substr(s + 1);
  return slug(d) + "_" + slug(p) + "_" + slug(model) + "_" + language + "_" + r.task + ".json";
}

namespace {

bool is_folder(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_yaml(const std::string& p) {
  const auto dot = p.rfind('.');
  return dot != std::string::npos && (p.substr(dot) == ".yaml" || p.substr(dot) == ".yml");
}

std::string folder_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash + 1);
}

std::string under(const std::string& dir, const std::string& p) {
  if (p.empty() || p[0] == '/' || dir.empty()) return p;
  return dir.back() == '/' ? dir + p : dir + "/" + p;
}

std::string scalar(const YAML::Node& n, const char* key, const std::string& where) {
  const auto v = n[key];
  if (!v) return "";
  if (!v.IsScalar()) throw core::InputError(where + ": '" + key + "' must be a string");
  return v.Scalar();
}

Suite read_yaml_suite(const std::string& path, const std::string& root) {
  YAML::Node y;
  try {
    y = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    throw core::InputError("cannot read suite '" + path + "': " + e.what());
  }
  Suite s;
  s.name = scalar(y, "suite", path);
  if (!y["tasks"] || !y["tasks"].IsSequence() || y["tasks"].size() == 0)
    throw core::InputError(path + ": 'tasks' must be a non-empty list");
  for (std::size_t i = 0; i < y["tasks"].size(); ++i) {
    const auto t = y["tasks"][i];
    const std::string where = path + ": tasks[" + std::to_string(i) + "]";
    SuiteTask task{scalar(t, "name", where), scalar(t, "folder", where),
                   scalar(t, "main_metric", where), scalar(t, "skip", where)};
    if (task.folder.empty()) throw core::InputError(where + ": 'folder' is missing");
    if (task.name.empty()) task.name = task.folder;
    task.folder = under(root, task.folder);
    if (task.skip.empty() && !is_folder(task.folder))
      task.skip = "no folder " + task.folder + " (--dataset-root)";
    s.tasks.push_back(std::move(task));
  }
  if (const auto g = y["groups"]) {
    if (!g.IsMap()) throw core::InputError(path + ": 'groups' must map names to task lists");
    for (const auto& kv : g) {
      std::vector<std::string> names;
      for (const auto& n : kv.second) names.push_back(n.Scalar());
      s.groups.emplace_back(kv.first.Scalar(), std::move(names));
    }
  }
  return s;
}

}  // namespace

Suite read_suite(const std::string& path, const std::string& dataset_root) {
  std::string file = path;
  if (path.find('/') == std::string::npos && !is_yaml(path) && !is_folder(path)) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      const auto builtin = builtin_path("configs/benchmark/" + path + ".yaml");
      if (builtin.empty())
        throw core::InputError("suite '" + path + "' is neither a file nor a built-in suite " +
                               "(built in: datacomp)");
      file = builtin;
    }
  }
  const std::string root = dataset_root.empty() ? folder_of(file) : dataset_root;
  if (is_yaml(file)) return read_yaml_suite(file, root);
  Suite s;
  s.name = path;
  for (const auto& line : read_lines(file)) {
    if (line.empty() || line[0] == '#') continue;
    const std::string folder = under(root, line);
    s.tasks.push_back({folder, folder, "", ""});
  }
  if (s.tasks.empty()) throw core::InputError("suite file '" + path + "' lists no dataset folder");
  return s;
}

std::optional<double> metric_value(const nlohmann::ordered_json& metrics,
                                   const std::string& metric) {
  if (metric == "mean_recall@1") {
    const auto a = metric_value(metrics, "image_retrieval_recall@1");
    const auto b = metric_value(metrics, "text_retrieval_recall@1");
    if (!a || !b) return std::nullopt;
    return 0.5 * (*a + *b);
  }
  if (!metrics.contains(metric) || !metrics[metric].is_number()) return std::nullopt;
  return metrics[metric].get<double>();
}

nlohmann::ordered_json aggregate_scores(const Suite& suite,
                                        const std::vector<std::pair<std::string, double>>& scores) {
  const auto mean_of = [&](const std::vector<std::string>& names) {
    double sum = 0;
    std::int64_t n = 0;
    for (const auto& [task, score] : scores)
      if (std::find(names.begin(), names.end(), task) != names.end()) {
        sum += score;
        ++n;
      }
    nlohmann::ordered_json j;
    j["score"] =
        n > 0 ? nlohmann::ordered_json(sum / static_cast<double>(n)) : nlohmann::ordered_json();
    j["tasks"] = n;
    j["of"] = names.size();
    return j;
  };
  nlohmann::ordered_json out;
  for (const auto& [group, names] : suite.groups) out[group] = mean_of(names);
  std::vector<std::string> all;
  for (const auto& t : suite.tasks)
    if (!t.main_metric.empty()) all.push_back(t.name);
  out["Average"] = mean_of(all);
  return out;
}

std::string results_table(const std::vector<BenchmarkResult>& results) {
  std::size_t w = 7;
  for (const auto& r : results) w = std::max(w, r.dataset.size());
  std::ostringstream out;
  out << std::left << std::setw(static_cast<int>(w) + 2) << "dataset" << std::setw(25) << "task"
      << std::setw(9) << "samples"
      << "metrics\n";
  for (const auto& r : results) {
    out << std::setw(static_cast<int>(w) + 2) << r.dataset << std::setw(25) << r.task
        << std::setw(9) << r.samples;
    for (auto it = r.metrics.begin(); it != r.metrics.end(); ++it) {
      out << " " << it.key() << "=";
      if (it.value().is_number())
        out << std::fixed << std::setprecision(4) << it.value().get<double>();
      else
        out << "n/a";
    }
    out << "\n";
  }
  return out.str();
}

}  // namespace clipper::eval
