// Running a suite of benchmark folders: plan (open every folder first), run, write the result
// files and the summary.
#include <sys/stat.h>

#include <iomanip>
#include <sstream>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/eval/benchmark.hpp"

namespace clipper::eval {
namespace {

// mkdir -p; a failure shows when the first result is written, naming the file.
void make_folders(const std::string& dir) {
  for (std::size_t p = dir.find('/', 1);; p = dir.find('/', p + 1)) {
    ::mkdir(dir.substr(0, p).c_str(), 0755);
    if (p == std::string::npos) break;
  }
}

nlohmann::ordered_json summary_row(const BenchmarkResult& r, const SuiteTask& task,
                                   nlohmann::ordered_json row, const std::string& file) {
  row["name"] = task.name;
  if (!task.main_metric.empty()) {
    const auto v = metric_value(r.metrics, task.main_metric);
    row["main_metric"] = v ? nlohmann::ordered_json(*v) : nlohmann::ordered_json();
  }
  row["samples"] = r.samples;
  row["seconds"] = r.seconds;
  row["images_per_s"] = r.seconds > 0 ? static_cast<double>(r.samples) / r.seconds : 0.0;
  row["file"] = file;
  return row;
}

}  // namespace

SuitePlan plan_suite(const std::vector<std::string>& folders, Suite suite,
                     const DatasetOverrides& overrides) {
  std::vector<SuiteTask> tasks;
  for (const auto& f : folders) tasks.push_back({f, f, "", ""});
  tasks.insert(tasks.end(), suite.tasks.begin(), suite.tasks.end());
  if (tasks.empty())
    throw core::InputError("benchmark: give --dataset DIR (repeatable) or --suite FILE");
  SuitePlan plan;
  for (auto& t : tasks) {
    if (!t.skip.empty())
      plan.skipped.push_back(t);
    else {
      plan.run.emplace_back(t, open_benchmark_dataset(t.folder, overrides));
      auto& d = plan.run.back().second;
      if (t.evaluator != GroupEval::none && d.kind != DatasetKind::classification)
        throw core::InputError(t.folder + ": evaluator " + to_string(t.evaluator) + " needs a " +
                               "classification folder (.cls labels), this one is " +
                               to_string(d.kind));
      d.group_eval = t.evaluator;
    }
  }
  if (plan.run.empty())
    throw core::InputError("benchmark: every task of the suite is skipped (" +
                           plan.skipped.front().name + ": " + plan.skipped.front().skip +
                           "; ...): nothing to run");
  suite.tasks = std::move(tasks);
  plan.suite = std::move(suite);
  return plan;
}

SuiteReport run_suite(model::ClipImpl& model, const tokenizer::Tokenizer& tok, at::Device device,
                      const Prepare& prepare, const SuitePlan& plan,
                      const BenchmarkOptions& options, const ResultNaming& naming,
                      dist::ProcessGroup& pg) {
  const bool writes = pg.rank() == 0;
  if (writes) make_folders(naming.out_dir);
  SuiteReport report;
  nlohmann::ordered_json rows = nlohmann::ordered_json::array(),
                         skipped = nlohmann::ordered_json::array();
  for (const auto& t : plan.skipped) {
    skipped.push_back({{"task", t.name}, {"reason", t.skip}});
    CLIPPER_INFO("skipping " << t.name << ": " << t.skip);
  }
  std::vector<std::pair<std::string, double>> scores;
  auto o = options;  // one set of weights: class embeddings shared between datasets
  o.classifiers = std::make_shared<ClassifierCache>();
  if (!options.text_cache_dir.empty()) {
    o.classifiers->disk_dir = options.text_cache_dir;
    o.classifiers->weights_key = text_cache_weights_key(model);
  }
  for (const auto& [task, dataset] : plan.run) {
    report.results.push_back(
        run_benchmark(model, tok, device, prepare, dataset, task_options(o, task), pg));
    const auto& r = report.results.back();
    const auto j = result_json(r, naming.model, naming.pretrained, naming.language);
    const auto file = naming.out_dir + "/" +
                      result_file_name(r, naming.model, naming.pretrained, naming.language);
    if (writes) core::write_file_atomic(file, j.dump() + "\n");
    rows.push_back(summary_row(r, task, j, file));
    if (!task.main_metric.empty())
      if (const auto v = metric_value(r.metrics, task.main_metric))
        scores.emplace_back(task.name, *v);
    if (writes)
      CLIPPER_INFO("wrote " << file << " (" << r.samples << " samples, " << std::fixed
                            << std::setprecision(2) << r.seconds << " s)");
  }
  auto& s = report.summary;
  s["model"] = naming.model;
  s["pretrained"] = naming.pretrained;
  if (!plan.suite.name.empty()) s["suite"] = plan.suite.name;
  s["results"] = rows;
  s["skipped"] = skipped;
  if (!plan.suite.groups.empty() || !scores.empty())
    s["aggregates"] = aggregate_scores(plan.suite, scores);
  if (writes) core::write_file_atomic(naming.out_dir + "/benchmark_summary.json", s.dump(2) + "\n");
  return report;
}

std::string aggregates_text(const nlohmann::ordered_json& summary) {
  if (!summary.contains("aggregates")) return "";
  std::ostringstream out;
  const auto& a = summary["aggregates"];
  for (auto it = a.begin(); it != a.end(); ++it) {
    out << it.key() << ": ";
    if (it.value()["score"].is_null())
      out << "n/a";
    else
      out << std::fixed << std::setprecision(4) << it.value()["score"].get<double>();
    out << " (" << it.value()["tasks"].get<std::int64_t>() << " of "
        << it.value()["of"].get<std::int64_t>() << " tasks)\n";
  }
  return out.str();
}

}  // namespace clipper::eval
