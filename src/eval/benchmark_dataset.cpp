#include "clipper/eval/benchmark_dataset.hpp"

#include <ATen/ATen.h>
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <sstream>

#include "clipper/core/error.hpp"
#include "clipper/core/paths.hpp"

namespace clipper::eval {
namespace {

bool is_file(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string strip(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n\f\v");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n\f\v");
  return s.substr(b, e - b + 1);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw core::InputError("cannot read '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string join(const std::string& a, const std::string& b) {
  return a.empty() || a.back() == '/' ? a + b : a + "/" + b;
}

std::string base_name(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const auto slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

// Python's str.splitlines() on "\n"-joined text: a final newline adds no empty line.
std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> out;
  std::string line;
  std::istringstream in(text);
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    out.push_back(line);
  }
  return out;
}

DatasetKind parse_kind(const std::string& root) {
  const std::string f = join(root, "dataset_type.txt");
  if (!is_file(f)) return DatasetKind::classification;
  std::string t = strip(read_text(f));
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  if (t == "retrieval") return DatasetKind::retrieval;
  if (t == "multilabel") return DatasetKind::multilabel;
  if (t == "classification" || t.empty()) return DatasetKind::classification;
  throw core::InputError(f + ": unknown dataset type '" + t +
                         "' (expected retrieval, multilabel or classification)");
}

bool is_dir(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// The sorted names in `dir` that pass `keep`.
template <class Keep>
std::vector<std::string> sorted_entries(const std::string& dir, const Keep& keep) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) throw core::InputError("cannot list folder '" + dir + "'");
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    if (keep(join(dir, name), name)) out.push_back(name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

bool is_image_name(std::string name) {
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  for (const char* ext : {".jpg", ".jpeg", ".png", ".webp"}) {
    const std::string e = ext;
    if (name.size() > e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0)
      return true;
  }
  return false;
}

std::vector<std::string> class_folders(const std::string& dir) {
  return sorted_entries(dir,
                        [](const std::string& path, const std::string&) { return is_dir(path); });
}

// ImageNet's WordNet ids: 'n' and 8 digits.
bool all_wnids(const std::vector<std::string>& names) {
  return std::all_of(names.begin(), names.end(), [](const std::string& n) {
    return n.size() == 9 && n[0] == 'n' &&
           std::all_of(n.begin() + 1, n.end(), [](unsigned char c) { return std::isdigit(c); });
  });
}

std::vector<std::string> list_from(const std::string& source, const std::string& what) {
  if (source == "imagenet1k") return builtin_list(source, what);
  return read_lines(source);
}

}  // namespace

const char* to_string(DatasetKind k) {
  switch (k) {
    case DatasetKind::classification:
      return "classification";
    case DatasetKind::multilabel:
      return "multilabel";
    case DatasetKind::retrieval:
      return "retrieval";
  }
  return "?";
}

std::vector<std::string> read_lines(const std::string& path) {
  std::vector<std::string> out;
  for (const auto& l : split_lines(read_text(path))) out.push_back(strip(l));
  return out;
}

std::string builtin_path(const std::string& relative) {
  for (const auto& share : core::share_dirs())
    if (is_file(join(share, relative))) return join(share, relative);
  return "";
}

std::vector<std::string> builtin_list(const std::string& name, const std::string& what) {
  const std::string file = "configs/benchmark/" + name + "_" + what + ".txt";
  const std::string path = builtin_path(file);
  if (path.empty())
    throw core::InputError("the built-in " + what + " list '" + name +
                           "' is not installed (looked for " + file + " under share/clipper)");
  return read_lines(path);
}

std::string fill_template(const std::string& templ, const std::string& name) {
  for (const char* mark : {"{c}", "{}"}) {
    const auto pos = templ.find(mark);
    if (pos == std::string::npos) continue;
    std::string out = templ;
    for (auto p = pos; p != std::string::npos; p = out.find(mark, p + name.size()))
      out.replace(p, std::strlen(mark), name);
    return out;
  }
  return templ + " " + name;
}

std::vector<std::string> BenchmarkDataset::shards(const std::string& split) const {
  if (!shard_files.empty()) return shard_files;
  const std::string dir = join(root, split);
  const std::string f = join(dir, "nshards.txt");
  if (!is_file(f))
    throw core::InputError("dataset '" + root + "' has no split '" + split + "': " + f +
                           " is missing");
  const std::string t = strip(read_text(f));
  std::int64_t n = 0;
  const bool digits = !t.empty() && std::all_of(t.begin(), t.end(),
                                                [](unsigned char c) { return std::isdigit(c); });
  if (digits && t.size() < 10) n = std::stoll(t);
  if (n <= 0) throw core::InputError(f + ": expected a positive number of shards, got '" + t + "'");
  std::vector<std::string> out;
  for (std::int64_t i = 0; i < n; ++i) {
    out.push_back(join(dir, std::to_string(i) + ".tar"));
    if (!is_file(out.back()))
      throw core::InputError(f + " says " + t + " shards but " + out.back() + " is missing");
  }
  return out;
}

bool BenchmarkDataset::is_tree(const std::string& split) const {
  const std::string dir = join(root, split);
  return shard_files.empty() && !is_file(join(dir, "nshards.txt")) && is_dir(dir) &&
         !class_folders(dir).empty();
}

std::vector<std::pair<std::string, std::int64_t>> BenchmarkDataset::tree_files(
    const std::string& split) const {
  const std::string dir = join(root, split);
  const auto classes = class_folders(dir);
  if (classes.size() != classnames.size())
    throw core::InputError("'" + dir + "' has " + std::to_string(classes.size()) +
                           " class folders but there are " + std::to_string(classnames.size()) +
                           " class names");
  std::vector<std::pair<std::string, std::int64_t>> out;
  for (std::size_t c = 0; c < classes.size(); ++c) {
    const std::string cdir = join(dir, classes[c]);
    const auto files = sorted_entries(cdir, [](const std::string& path, const std::string& name) {
      return is_image_name(name) && is_file(path);
    });
    if (files.empty())
      throw core::InputError("class folder '" + cdir + "' has no .jpg, .jpeg, .png or .webp image");
    for (const auto& f : files) out.emplace_back(join(cdir, f), static_cast<std::int64_t>(c));
  }
  return out;
}

BenchmarkDataset open_benchmark_dataset(const std::string& root,
                                        const DatasetOverrides& overrides) {
  struct stat st {};
  if (::stat(root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw core::InputError("dataset '" + root + "' is not a folder");
  BenchmarkDataset d;
  d.root = root;
  d.name = "wds/" + base_name(root);
  d.kind = parse_kind(root);
  if (d.kind == DatasetKind::retrieval) return d;
  const std::string names = join(root, "classnames.txt");
  if (!overrides.classnames.empty())
    d.classnames = list_from(overrides.classnames, "classnames");
  else if (is_file(names))
    d.classnames = read_lines(names);
  else if (is_dir(join(root, "val")) && class_folders(join(root, "val")).size() == 1000 &&
           all_wnids(class_folders(join(root, "val"))))
    d.classnames = builtin_list("imagenet1k", "classnames");  // ImageNet's own tree
  else
    throw core::InputError("dataset '" + root + "' has no classnames.txt: add one (line i = the " +
                           "name of class i) or give --classnames FILE (or imagenet1k)");
  const std::string templ = join(root, "zeroshot_classification_templates.txt");
  if (!overrides.templates.empty())
    d.templates = list_from(overrides.templates, "templates");
  else if (is_file(templ))
    d.templates = read_lines(templ);
  else
    d.templates = builtin_list("imagenet1k", "templates");
  if (d.classnames.empty()) throw core::InputError(names + ": no class names");
  if (d.templates.empty()) throw core::InputError(templ + ": no templates");
  return d;
}

}  // namespace clipper::eval
