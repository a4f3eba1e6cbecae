#include "clipper/eval/benchmark.hpp"
#include "clipper/eval/precision.hpp"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iomanip>
#include <sstream>

#include "clipper/core/digest.hpp"
#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/core/progress.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/eval/embed.hpp"
#include "clipper/eval/group_metrics.hpp"
#include "clipper/eval/metrics.hpp"
#include "clipper/io/safetensors.hpp"
#include "clipper/tokenizer/tokenizer.hpp"

namespace clipper::eval {
namespace {

namespace fs = std::filesystem;

// Restores the model's training flag on the way out.
struct EvalMode {
  explicit EvalMode(model::ClipImpl& m) : model(m), was_training(m.is_training()) { m.eval(); }
  ~EvalMode() { model.train(was_training); }
  model::ClipImpl& model;
  bool was_training;
};

at::Tensor image_features(model::ClipImpl& model, const Prepare& prepare, const BenchmarkBatch& b) {
  const auto images = prepare(b.images);
  const auto grids = b.grids.defined() ? b.grids.to(images.device()) : at::Tensor();
  const TowerAutocast autocast;
  return model.encode_image(images, grids, /*normalize=*/true).to(at::kFloat).cpu();
}

// Runs this rank's loop, then every rank learns whether any failed: a bad sample on one rank stops
// every rank with an error, instead of leaving the others waiting in the gathers that follow.
template <class Loop>
void on_every_rank(dist::ProcessGroup& pg, const BenchmarkDataset& d, Loop&& loop) {
  std::exception_ptr error;
  try {
    loop();
  } catch (const std::exception&) {
    error = std::current_exception();
  }
  if (!pg.any(error != nullptr)) return;
  if (error) std::rethrow_exception(error);
  throw core::InputError("dataset '" + d.root + "': another rank stopped with an error (its " +
                         "log names the sample)");
}

// Every rank's rows of `local` in the split's order: rank r holds samples r, r + W, r + 2W, ...
// (BenchmarkReader's share), so row i of rank r is sample i * W + r.
at::Tensor gather_in_order(const at::Tensor& local, dist::ProcessGroup& pg) {
  const int W = pg.size();
  if (W == 1) return local;
  const auto all = gather_rows(local, pg);  // rank 0's rows, then rank 1's, ...
  const std::int64_t N = all.size(0);
  std::vector<std::int64_t> offset(W + 1, 0);
  for (int r = 0; r < W; ++r) offset[r + 1] = offset[r] + (N - r + W - 1) / W;
  std::vector<std::int64_t> index(static_cast<std::size_t>(N));
  for (std::int64_t j = 0; j < N; ++j) index[j] = offset[j % W] + j / W;
  return all.index_select(0, at::tensor(index, at::kLong));
}

// The CRC-32 of `s` as 8 hex digits.
std::string crc_hex(const std::string& s) {
  core::Crc32 crc;
  crc.update(s.data(), s.size());
  char out[16];
  std::snprintf(out, sizeof out, "%08x", crc.digest().crc32);
  return out;
}

// The zero-shot classifier [C, D]: rank r embeds classes [C r / W, C (r + 1) / W), then they are
// gathered once (each class's templates are one batch, so its row is the same on any rank).
at::Tensor embed_classes(model::ClipImpl& model, const tokenizer::Tokenizer& tok, at::Device device,
                         const BenchmarkDataset& d, dist::ProcessGroup& pg) {
  const auto C = static_cast<std::int64_t>(d.classnames.size());
  const std::int64_t W = pg.size(), r = pg.rank();
  const std::int64_t lo = C * r / W, hi = C * (r + 1) / W;
  const std::vector<std::string> mine(d.classnames.begin() + lo, d.classnames.begin() + hi);
  const auto local =
      mine.empty()
          ? at::zeros({0, model.text_projection.size(1)})
          : zeroshot_classifier(model, tok, {mine, d.templates}, device).to(at::kFloat).cpu();
  return gather_rows(local, pg);
}

// embed_classes, or the rows an earlier dataset of this evaluation with the same class names and
// templates got (every rank takes the same branch: the datasets are the same on every rank).
at::Tensor shared_classifier(model::ClipImpl& model, const tokenizer::Tokenizer& tok,
                             at::Device device, const BenchmarkDataset& d, dist::ProcessGroup& pg,
                             ClassifierCache* cache) {
  if (!cache) return embed_classes(model, tok, device, d, pg);
  std::string key;
  for (const auto& c : d.classnames) key += c + '\n';
  key += '\x1f';
  for (const auto& t : d.templates) key += t + '\n';
  if (const auto it = cache->by_classes.find(key); it != cache->by_classes.end()) {
    ++cache->reused;
    CLIPPER_INFO(d.name << ": the class embeddings of an earlier dataset with the same "
                        << d.classnames.size() << " classes and " << d.templates.size()
                        << " templates are reused");
    return it->second;
  }
  if (cache->disk_dir.empty())
    return cache->by_classes[key] = embed_classes(model, tok, device, d, pg);
  const auto& s = model.spec();
  const std::string texts = s.tokenizer + '\x1f' + std::to_string(s.context_length) + '\x1f' +
                            s.tokenizer_clean + '\x1f' + (eval_in_bf16() ? "bf16" : "fp32") +
                            '\x1f' + key;
  const auto file =
      cache->disk_dir + "/" + cache->weights_key + "-" + crc_hex(texts) + ".safetensors";
  // The file is used only where every rank sees it, so that every rank takes the same branch.
  if (!pg.any(!fs::exists(file))) {
    std::map<std::string, std::string> meta;
    auto rows = io::load_safetensors(file, &meta);
    if (meta["texts"] == texts && rows.size() == 1) {  // else a CRC collision: embed again
      ++cache->loaded;
      CLIPPER_INFO(d.name << ": class embeddings from the text cache " << file);
      return cache->by_classes[key] = rows[0].second;
    }
  }
  auto rows = embed_classes(model, tok, device, d, pg);
  if (pg.rank() == 0) {
    fs::create_directories(cache->disk_dir);
    io::save_safetensors(file, {{"classifier", rows}}, {{"texts", texts}});  // atomic
  }
  return cache->by_classes[key] = rows;
}

}  // namespace

std::string text_cache_weights_key(const model::ClipImpl& model) {
  core::Crc32 crc;
  auto add = [&](const std::string& name, const at::Tensor& t) {
    crc.update(name.data(), name.size());
    const auto c = t.detach().to(at::kCPU).contiguous();
    crc.update(c.data_ptr(), static_cast<std::size_t>(c.nbytes()));
  };
  for (const auto& p : model.named_parameters()) add(p.key(), p.value());
  for (const auto& b : model.named_buffers()) add(b.key(), b.value());
  const auto d = crc.digest();
  char out[32];
  std::snprintf(out, sizeof out, "%llu-%08x", static_cast<unsigned long long>(d.size), d.crc32);
  return out;
}

namespace {

nlohmann::ordered_json classification(model::ClipImpl& model, const tokenizer::Tokenizer& tok,
                                      at::Device device, const Prepare& prepare,
                                      const BenchmarkDataset& d, BenchmarkReader& reader,
                                      ClassifierCache* cache, dist::ProcessGroup& pg) {
  const auto classifier = shared_classifier(model, tok, device, d, pg, cache);
  const bool multi = d.kind == DatasetKind::multilabel;
  std::vector<at::Tensor> logits, truth, metadata;
  on_every_rank(pg, d, [&] {
    core::Progress progress("benchmark " + d.name, -1, "samples");
    while (auto b = reader.next()) {
      logits.push_back(image_features(model, prepare, *b).matmul(classifier.t()));
      truth.push_back(multi ? b->multilabels : b->labels);
      if (b->metadata.defined()) metadata.push_back(b->metadata);
      progress.update(reader.samples());
    }
  });
  const auto C = classifier.size(0);
  const auto L = gather_in_order(logits.empty() ? at::zeros({0, C}) : at::cat(logits), pg);
  const auto T = gather_in_order(
      truth.empty() ? (multi ? at::zeros({0, C}) : at::zeros({0}, at::kLong)) : at::cat(truth), pg);
  if (L.size(0) == 0) throw core::InputError("dataset '" + d.root + "': the split has no sample");
  nlohmann::ordered_json m;
  if (multi) {
    m["mean_average_precision"] = mean_average_precision(L, T);
    return m;
  }
  const auto c = classification_metrics(L, T);
  m["acc1"] = c.acc1;
  m["acc5"] = c.acc5 ? nlohmann::ordered_json(*c.acc5) : nlohmann::ordered_json();
  m["mean_per_class_recall"] = c.mean_per_class_recall;
  if (d.group_eval != GroupEval::none) {
    const auto F = static_cast<std::int64_t>(metadata_fields(d.group_eval).size());
    const auto M = gather_in_order(metadata.empty() ? at::zeros({0, F}) : at::cat(metadata), pg);
    m.update(group_metrics(d.group_eval, L, T, M));
  }
  return m;
}

nlohmann::ordered_json retrieval(model::ClipImpl& model, const tokenizer::Tokenizer& tok,
                                 at::Device device, const Prepare& prepare,
                                 const BenchmarkDataset& d, BenchmarkReader& reader,
                                 const BenchmarkOptions& o, dist::ProcessGroup& pg) {
  std::vector<at::Tensor> images, texts;
  std::vector<std::int64_t> owner;  // each caption's sample, as its index in the split
  const std::int64_t W = pg.size(), rank = pg.rank(), D = model.text_projection.size(1);
  on_every_rank(pg, d, [&] {
    core::Progress progress("benchmark " + d.name, -1, "samples");
    while (auto b = reader.next()) {
      const auto first = reader.samples() - b->images.size(0);
      std::vector<std::string> captions;
      for (std::size_t i = 0; i < b->captions.size(); ++i)
        for (const auto& c : b->captions[i]) {
          captions.push_back(c);
          owner.push_back((first + static_cast<std::int64_t>(i)) * W + rank);
        }
      images.push_back(image_features(model, prepare, *b));
      if (!captions.empty())
        texts.push_back(embed_texts(model, tok, captions, o.reader.batch_size, device));
      progress.update(reader.samples());
    }
  });
  const auto I = gather_in_order(images.empty() ? at::zeros({0, D}) : at::cat(images), pg);
  if (I.size(0) == 0) throw core::InputError("dataset '" + d.root + "': the split has no sample");
  // The captions in the split's order: by their image, each image's in file order (stable).
  auto T = gather_rows(texts.empty() ? at::zeros({0, D}) : at::cat(texts), pg);
  auto owners = gather_rows(at::tensor(owner, at::kLong), pg);
  const auto order = std::get<1>(at::sort(owners, /*stable=*/true, 0, false));
  T = T.index_select(0, order);
  owners = owners.index_select(0, order);
  const auto r = retrieval_metrics(I, T, owners, o.recall_k);
  nlohmann::ordered_json m;
  for (std::size_t i = 0; i < r.ks.size(); ++i) {
    m["image_retrieval_recall@" + std::to_string(r.ks[i])] = r.image_retrieval[i];
    m["text_retrieval_recall@" + std::to_string(r.ks[i])] = r.text_retrieval[i];
  }
  return m;
}

// Normalized image features and labels of every sample of `split` (every rank's share gathered).
std::pair<at::Tensor, at::Tensor> split_features(model::ClipImpl& model, const Prepare& prepare,
                                                 const BenchmarkDataset& d,
                                                 const std::string& split, ReaderOptions ro,
                                                 dist::ProcessGroup& pg) {
  std::vector<at::Tensor> x, y;
  on_every_rank(pg, d, [&] {
    BenchmarkReader reader(d, split, ro);
    core::Progress progress("features " + d.name + " " + split, -1, "samples");
    while (auto b = reader.next()) {
      x.push_back(image_features(model, prepare, *b));
      y.push_back(b->labels);
      progress.update(reader.samples());
    }
  });
  const auto X =
      gather_in_order(x.empty() ? at::zeros({0, model.text_projection.size(1)}) : at::cat(x), pg);
  const auto Y = gather_in_order(y.empty() ? at::zeros({0}, at::kLong) : at::cat(y), pg);
  if (X.size(0) == 0)
    throw core::InputError("dataset '" + d.root + "': the " + split + " split has no sample");
  return {X, Y};
}

nlohmann::ordered_json linear_probe_task(model::ClipImpl& model, const Prepare& prepare,
                                         const BenchmarkDataset& d, const BenchmarkOptions& o,
                                         const ReaderOptions& ro, std::int64_t* samples,
                                         dist::ProcessGroup& pg) {
  if (d.kind != DatasetKind::classification)
    throw core::InputError("dataset '" + d.root + "': a linear probe needs a classification " +
                           "folder (.cls labels), this one is " + to_string(d.kind));
  auto [x, y] = split_features(model, prepare, d, o.train_split, ro, pg);
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
  const auto [tx, ty] = split_features(model, prepare, d, o.split, ro, pg);
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
                              const BenchmarkDataset& dataset, const BenchmarkOptions& options,
                              dist::ProcessGroup& pg) {
  const auto t0 = std::chrono::steady_clock::now();
  at::NoGradGuard no_grad;
  EvalMode eval_mode(model);
  ReaderOptions ro = options.reader;
  ro.image_size = static_cast<int>(model.spec().image_size);
  ro.resize_mode = model.spec().resize_mode;
  ro.interpolation = model.spec().interpolation;
  ro.naflex_patch = model.spec().naflex_inputs() ? static_cast<int>(model.spec().patch_size) : 0;
  ro.naflex_max_tokens = model.spec().max_seq_len;
  ro.rank = pg.rank();
  ro.world_size = pg.size();
  BenchmarkResult r;
  r.dataset = dataset.name;
  if (options.linear_probe) {
    r.task = "linear_probe";
    r.metrics = linear_probe_task(model, prepare, dataset, options, ro, &r.samples, pg);
  } else {
    BenchmarkReader reader(dataset, options.split, ro);
    if (dataset.kind == DatasetKind::retrieval) {
      r.task = "zeroshot_retrieval";
      r.metrics = retrieval(model, tok, device, prepare, dataset, reader, options, pg);
    } else {
      r.task = "zeroshot_classification";
      r.metrics = classification(model, tok, device, prepare, dataset, reader,
                                 options.classifiers.get(), pg);
    }
    r.samples = pg.all_reduce_int(reader.samples(), dist::ReduceOp::sum, "benchmark samples");
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

BenchmarkResult run_benchmark(model::ClipImpl& model, const tokenizer::Tokenizer& tok,
                              at::Device device, const Prepare& prepare,
                              const BenchmarkDataset& dataset, const BenchmarkOptions& options) {
  dist::ProcessGroup one;
  return run_benchmark(model, tok, device, prepare, dataset, options, one);
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
    task.evaluator = parse_group_eval(scalar(t, "evaluator", where), where);
    const auto kind = scalar(t, "task", where);
    if (!kind.empty() && kind != "zeroshot" && kind != "linear_probe")
      throw core::InputError(where + ": 'task' is '" + kind + "'; expected zeroshot or " +
                             "linear_probe");
    task.linear_probe = kind == "linear_probe";
    task.train_split = scalar(t, "train_split", where);
    if (task.linear_probe && task.evaluator != GroupEval::none)
      throw core::InputError(where + ": a linear probe has no DataComp evaluator (give one or " +
                             "the other)");
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

BenchmarkOptions task_options(const BenchmarkOptions& options, const SuiteTask& task) {
  auto o = options;
  o.linear_probe = options.linear_probe || task.linear_probe;
  if (!task.train_split.empty()) o.train_split = task.train_split;
  return o;
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
