// `clipper data stats FOLDER` on a CLIP_benchmark folder: its metadata and, per split, the samples,
// the labels by class (or the captions), and the samples its reader would refuse.
#include <ATen/ATen.h>
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <exception>
#include <map>
#include <sstream>

#include "clipper/core/error.hpp"
#include "clipper/data/tar_stream.hpp"
#include "clipper/eval/benchmark_dataset.hpp"

namespace clipper::eval {
namespace {

bool has_file(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The folders under `root` that hold a split: shards with nshards.txt, or a class tree.
std::vector<std::string> split_names(const BenchmarkDataset& d) {
  std::vector<std::string> out;
  DIR* dir = ::opendir(d.root.c_str());
  if (!dir) throw core::InputError("cannot list folder '" + d.root + "'");
  while (const dirent* e = ::readdir(dir)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    if (has_file(d.root + "/" + name + "/nshards.txt") || d.is_tree(name)) out.push_back(name);
  }
  ::closedir(dir);
  std::sort(out.begin(), out.end());
  return out;
}

struct SplitCounts {
  std::int64_t samples = 0, captions = 0, min_captions = -1, max_captions = 0;
  std::vector<std::int64_t> per_class;  // classification: samples; multilabel: positives
  std::map<std::string, std::int64_t> problems;
  std::vector<std::string> first_problems;  // up to 5, each naming its sample
};

void problem(SplitCounts& c, const std::string& kind, const std::string& what) {
  ++c.problems[kind];
  if (c.first_problems.size() < 5) c.first_problems.push_back(what + ": " + kind);
}

const std::string* image_of(const data::RawSample& s) {
  for (const char* ext : {"webp", "png", "jpg", "jpeg"})
    if (const auto* b = s.find(ext)) return b;
  return nullptr;
}

void count_sample(const BenchmarkDataset& d, const data::RawSample& s, const std::string& what,
                  SplitCounts& c) {
  ++c.samples;
  if (!image_of(s)) problem(c, "no image", what);
  const char* ext = d.kind == DatasetKind::retrieval    ? "txt"
                    : d.kind == DatasetKind::multilabel ? "npy"
                                                        : "cls";
  const auto* entry = s.find(ext);
  if (!entry) return problem(c, std::string("no .") + ext, what);
  const auto C = static_cast<std::int64_t>(d.classnames.size());
  if (d.kind == DatasetKind::retrieval) {
    std::int64_t n = 0;
    std::istringstream in(*entry);
    for (std::string line; std::getline(in, line);) ++n;
    c.captions += n;
    c.min_captions = c.min_captions < 0 ? n : std::min(c.min_captions, n);
    c.max_captions = std::max(c.max_captions, n);
  } else if (d.kind == DatasetKind::multilabel) {
    try {
      const auto v = parse_npy_vector(*entry, what);
      if (v.numel() != C) return problem(c, "label vector of another length", what);
      for (std::int64_t k = 0; k < C; ++k) c.per_class[k] += v[k].item<float>() != 0;
    } catch (const core::InputError&) {
      problem(c, "unreadable .npy", what);
    }
  } else {
    std::int64_t label = -1;
    try {
      std::size_t used = 0;
      label = std::stoll(*entry, &used);
    } catch (const std::exception&) {
    }
    if (label < 0 || label >= C) return problem(c, "label outside the classes", what);
    ++c.per_class[label];
  }
}

SplitCounts count_split(const BenchmarkDataset& d, const std::string& split, std::int64_t* shards) {
  SplitCounts c;
  c.per_class.assign(d.classnames.size(), 0);
  if (d.is_tree(split)) {
    const auto files = d.tree_files(split);
    *shards = 0;
    c.samples = static_cast<std::int64_t>(files.size());
    for (const auto& f : files) ++c.per_class[f.second];
    return c;
  }
  const auto list = d.shards(split);
  *shards = static_cast<std::int64_t>(list.size());
  for (const auto& url : list) {
    data::ShardReader reader(url);
    data::RawSample s;
    while (reader.next(s)) count_sample(d, s, "shard '" + url + "' sample '" + s.key + "'", c);
    if (reader.status() != data::ShardStatus::ok)
      problem(c, std::string("shard ") + data::to_string(reader.status()), "shard '" + url + "'");
  }
  return c;
}

}  // namespace

nlohmann::ordered_json describe_benchmark_folder(const std::string& root) {
  const auto d = open_benchmark_dataset(root);
  nlohmann::ordered_json j;
  j["dataset"] = d.name;
  j["root"] = d.root;
  j["task"] = to_string(d.kind);
  j["classes"] = d.classnames.size();
  j["templates"] = d.templates.size();
  nlohmann::ordered_json splits = nlohmann::ordered_json::object();
  for (const auto& split : split_names(d)) {
    std::int64_t shards = 0;
    const auto c = count_split(d, split, &shards);
    nlohmann::ordered_json s;
    s["layout"] = d.is_tree(split) ? "class folders" : "shards";
    s["shards"] = shards;
    s["samples"] = c.samples;
    if (d.kind == DatasetKind::retrieval) {
      s["captions"] = c.captions;
      s["captions_per_image"] = {{"min", std::max<std::int64_t>(c.min_captions, 0)},
                                 {"max", c.max_captions}};
    } else {
      s[d.kind == DatasetKind::multilabel ? "positives_per_class" : "samples_per_class"] =
          c.per_class;
      s["classes_absent"] = std::count(c.per_class.begin(), c.per_class.end(), 0);
    }
    s["problems"] = c.problems;
    s["first_problems"] = c.first_problems;
    splits[split] = s;
  }
  j["splits"] = splits;
  return j;
}

std::string benchmark_folder_text(const nlohmann::ordered_json& j) {
  std::ostringstream out;
  out << j["dataset"].get<std::string>() << " (" << j["root"].get<std::string>()
      << "): " << j["task"].get<std::string>();
  if (j["task"] != "retrieval")
    out << ", " << j["classes"] << " classes, " << j["templates"] << " templates";
  out << "\n";
  if (j["splits"].empty()) out << "  no split (no <split>/nshards.txt, no class folders)\n";
  for (const auto& [name, s] : j["splits"].items()) {
    out << "  " << name << ": " << s["samples"] << " samples";
    if (s["layout"] == "shards")
      out << " in " << s["shards"] << " shard(s)";
    else
      out << " in class folders";
    if (s.contains("captions"))
      out << ", " << s["captions"] << " captions (" << s["captions_per_image"]["min"] << " to "
          << s["captions_per_image"]["max"] << " per image)";
    if (s.contains("classes_absent"))
      out << ", " << s["classes_absent"] << " class(es) without a "
          << (s.contains("positives_per_class") ? "positive" : "sample");
    std::int64_t bad = 0;
    for (const auto& [kind, n] : s["problems"].items()) bad += n.get<std::int64_t>();
    out << (bad == 0 ? ", no problem\n" : ", " + std::to_string(bad) + " problem(s):\n");
    for (const auto& p : s["first_problems"]) out << "    " << p.get<std::string>() << "\n";
  }
  return out.str();
}

}  // namespace clipper::eval
