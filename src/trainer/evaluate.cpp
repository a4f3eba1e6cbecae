#include "clipper/trainer/evaluate.hpp"

#include <ATen/ATen.h>

#include <sys/stat.h>

#include <algorithm>
#include <iomanip>

#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/data/loader.hpp"
#include "clipper/data/shard_list.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/eval/benchmark.hpp"
#include "clipper/eval/precision.hpp"
#include "clipper/tokenizer/tokenizer.hpp"

namespace clipper::trainer {

namespace {

// The model's evaluation transform: its image size and preprocess_cfg (resize mode, filter).
std::unique_ptr<data::Loader> eval_loader(const EvalSettings& es, const std::string& shards,
                                          bool labels, const model::ModelSpec& spec,
                                          std::shared_ptr<const tokenizer::Tokenizer> tok,
                                          const dist::ProcessGroup& pg) {
  auto o = data::LoaderOptions::from_config(es.data, es.eval.batch_size,
                                            static_cast<int>(spec.image_size), pg.rank(), pg.size(),
                                            es.seed);
  o.resize_mode = spec.resize_mode;
  o.interpolation = spec.interpolation;
  o.naflex_patch = spec.naflex_inputs() ? static_cast<int>(spec.patch_size) : 0;
  o.naflex_max_tokens = spec.max_seq_len;
  o.naflex_seq_lens.clear();  // evaluation: batches of eval.batch_size under max_seq_len
  o.naflex_max_tokens_per_batch = 0;
  o.shards = shards;
  o.source_weights.clear();
  o.num_samples = 0;
  o.resampled = false;
  o.train = false;
  o.drop_last = false;
  if (labels) o.label_key = "cls";
  return std::make_unique<data::Loader>(o, std::move(tok));
}

// How the evaluation sets are read: the data section's decode settings, eval.batch_size and
// data.workers decode threads.
eval::BenchmarkOptions reader_options(const EvalSettings& es) {
  const auto lo = data::LoaderOptions::from_config(es.data, es.eval.batch_size, 224, 0, 1, es.seed);
  eval::BenchmarkOptions o;
  o.reader.batch_size = es.eval.batch_size;
  o.reader.threads = std::max(1, lo.workers);
  o.reader.transparency = lo.transparency;
  o.reader.max_image_pixels = lo.max_image_pixels;
  return o;
}

// eval.zeroshot_shards as a classification set: image + `cls` shards, read in list order with
// or without sizes.json and text (each rank its share, as `clipper benchmark`).
eval::BenchmarkDataset zeroshot_dataset(const std::string& shards,
                                        const eval::ZeroShotClasses& classes) {
  eval::BenchmarkDataset d;
  d.root = shards;
  d.name = "eval.zeroshot_shards";
  d.kind = eval::DatasetKind::classification;
  d.classnames = classes.classnames;
  d.templates = classes.templates;
  for (const auto& shard : data::parse_shard_list(shards).shards)
    d.shard_files.push_back(shard.url);
  return d;
}

void add_zeroshot(const EvalSettings& es, model::ClipImpl& model,
                  std::shared_ptr<const tokenizer::Tokenizer> tok, dist::ProcessGroup& pg,
                  at::Device device, const eval::Prepare& prepare, const std::string& what,
                  EvalReport* rep) {
  if (es.eval.zeroshot_classes.empty())
    throw core::InputError("eval.zeroshot_shards is set but eval.zeroshot_classes is empty");
  const auto d = zeroshot_dataset(es.eval.zeroshot_shards,
                                  eval::load_zeroshot_classes(es.eval.zeroshot_classes));
  const auto r = eval::run_benchmark(model, *tok, device, prepare, d, reader_options(es), pg);
  const double top1 = r.metrics["acc1"].get<double>();
  // Below 5 classes every class is among the first 5.
  const double top5 = r.metrics["acc5"].is_null() ? 1.0 : r.metrics["acc5"].get<double>();
  rep->scalars.emplace_back("eval/zeroshot_top1", top1);
  rep->scalars.emplace_back("eval/zeroshot_top5", top5);
  rep->zeroshot_top1 = top1;
  CLIPPER_INFO(what << ": zero-shot on " << r.samples << " images: top-1 " << std::fixed
                    << std::setprecision(2) << 100 * top1 << " %, top-5 " << 100 * top5 << " %");
}

// eval.suite: folders and suite files (a list or a YAML suite) into one plan.
eval::SuitePlan suite_plan(const config::EvalConfig& e) {
  std::vector<std::string> folders;
  eval::Suite suite;
  for (const auto& entry : e.suite) {
    struct stat st {};
    if (::stat(entry.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      folders.push_back(entry);
      continue;
    }
    auto more = eval::read_suite(entry);
    if (suite.name.empty()) suite.name = more.name;
    suite.tasks.insert(suite.tasks.end(), more.tasks.begin(), more.tasks.end());
    suite.groups.insert(suite.groups.end(), more.groups.begin(), more.groups.end());
  }
  return eval::plan_suite(folders, std::move(suite), {});
}

std::string folder_name(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const auto slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

// Every dataset of eval.suite on every rank: "eval/<folder>/<metric>" for each numeric metric.
void add_suite(const EvalSettings& es, model::ClipImpl& model,
               std::shared_ptr<const tokenizer::Tokenizer> tok, dist::ProcessGroup& pg,
               at::Device device, const eval::Prepare& prepare, const std::string& what,
               EvalReport* rep) {
  const auto plan = suite_plan(es.eval);
  auto options = reader_options(es);
  options.classifiers = std::make_shared<eval::ClassifierCache>();  // this evaluation's weights
  for (const auto& [task, dataset] : plan.run) {
    const auto r = eval::run_benchmark(model, *tok, device, prepare, dataset,
                                       eval::task_options(options, task), pg);
    const std::string prefix = "eval/" + folder_name(task.folder) + "/";
    for (auto it = r.metrics.begin(); it != r.metrics.end(); ++it)
      if (it.value().is_number())
        rep->scalars.emplace_back(prefix + it.key(), it.value().get<double>());
    CLIPPER_INFO(what << ": " << dataset.name << " (" << r.task << ", " << r.samples
                      << " samples): " << r.metrics.dump());
  }
}

void add_retrieval(const EvalSettings& es, model::ClipImpl& model,
                   std::shared_ptr<const tokenizer::Tokenizer> tok, dist::ProcessGroup& pg,
                   const eval::Prepare& prepare, const std::string& what, EvalReport* rep) {
  auto l = eval_loader(es, es.eval.retrieval_shards, false, model.spec(), tok, pg);
  const auto r = eval::retrieval(model, *l, prepare, pg);
  const char* names[3] = {"r1", "r5", "r10"};
  for (int i = 0; i < 3; ++i) {
    rep->scalars.emplace_back(std::string("eval/image_to_text_") + names[i], r.image_to_text[i]);
    rep->scalars.emplace_back(std::string("eval/text_to_image_") + names[i], r.text_to_image[i]);
  }
  CLIPPER_INFO(what << ": retrieval on " << r.count << " pairs: image->text R@1/5/10 " << std::fixed
                    << std::setprecision(3) << r.image_to_text[0] << "/" << r.image_to_text[1]
                    << "/" << r.image_to_text[2] << ", text->image " << r.text_to_image[0] << "/"
                    << r.text_to_image[1] << "/" << r.text_to_image[2]);
}

}  // namespace

EvalSettings EvalSettings::from(const config::Config& cfg) {
  return {cfg.eval, cfg.data, static_cast<std::uint64_t>(cfg.train.seed)};
}

EvalReport evaluate(const EvalSettings& settings, model::ClipImpl& model,
                    std::shared_ptr<const tokenizer::Tokenizer> tok, dist::ProcessGroup& pg,
                    at::Device device, const eval::Prepare& prepare, const std::string& what) {
  EvalReport rep;
  const eval::EvalPrecision precision(settings.bf16, device.type());
  if (settings.bf16) CLIPPER_INFO("evaluating " << what << " under bf16 autocast (the run's)");
  if (!settings.eval.zeroshot_shards.empty())
    add_zeroshot(settings, model, tok, pg, device, prepare, what, &rep);
  if (!settings.eval.retrieval_shards.empty())
    add_retrieval(settings, model, tok, pg, prepare, what, &rep);
  if (!settings.eval.suite.empty())
    add_suite(settings, model, tok, pg, device, prepare, what, &rep);
  return rep;
}

void check_suite(const config::EvalConfig& eval) {
  if (!eval.suite.empty()) suite_plan(eval);
}

}  // namespace clipper::trainer
