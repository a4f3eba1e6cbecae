#include "clipper/data/shard_list.hpp"

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_set>

#include "clipper/core/error.hpp"

namespace clipper::data {
namespace {

// More shards than any dataset has: a bound on what a pattern may expand to.
constexpr std::uint64_t kMaxShards = 1'000'000;

bool all_digits(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// "{a..b}" or "{x,y,z}": the alternatives of one brace body, at most kMaxShards of them.
std::vector<std::string> expand_one(const std::string& body, const std::string& pattern) {
  std::vector<std::string> out;
  const auto dots = body.find("..");
  if (dots != std::string::npos) {
    const std::string a = body.substr(0, dots), b = body.substr(dots + 2);
    core::require(
        all_digits(a) && all_digits(b) && a.size() <= 18 && b.size() <= 18,
        "shard pattern '" + pattern + "': range {" + body + "} needs two non-negative integers");
    const long long lo = std::stoll(a), hi = std::stoll(b);
    core::require(lo <= hi, "shard pattern '" + pattern + "': range {" + body + "} goes backwards");
    core::require(static_cast<std::uint64_t>(hi - lo) < kMaxShards,
                  "shard pattern '" + pattern + "': range {" + body + "} is too large (more than " +
                      std::to_string(kMaxShards) + " shards)");
    const std::size_t width = a.size();
    for (long long v = lo; v <= hi; ++v) {
      std::string s = std::to_string(v);
      if (s.size() < width) s.insert(0, width - s.size(), '0');
      out.push_back(std::move(s));
    }
    return out;
  }
  std::string cur;
  for (char c : body) {
    if (c == ',') {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

}  // namespace

std::vector<std::string> expand_braces(const std::string& pattern) {
  // The pattern as literal text and brace alternatives, in order; then every combination, the
  // last brace varying fastest. Iterative, and the number of names is checked before any is made.
  std::vector<std::string> literals{""};
  std::vector<std::vector<std::string>> choices;
  std::uint64_t count = 1;
  std::size_t pos = 0;
  while (pos < pattern.size()) {
    const auto open = pattern.find('{', pos), close = pattern.find('}', pos);
    if (open == std::string::npos) {
      core::require(close == std::string::npos,
                    "shard pattern '" + pattern + "': '}' without a matching '{'");
      literals.back() += pattern.substr(pos);
      break;
    }
    core::require(close != std::string::npos,
                  "shard pattern '" + pattern + "': '{' without a matching '}'");
    core::require(close > open, "shard pattern '" + pattern + "': '}' before '{'");
    const std::string body = pattern.substr(open + 1, close - open - 1);
    core::require(body.find('{') == std::string::npos,
                  "shard pattern '" + pattern + "': nested braces are not supported");
    literals.back() += pattern.substr(pos, open - pos);
    choices.push_back(expand_one(body, pattern));
    count *= choices.back().size();
    core::require(count <= kMaxShards, "shard pattern '" + pattern + "' expands to more than " +
                                           std::to_string(kMaxShards) + " shards");
    literals.emplace_back();
    pos = close + 1;
  }
  std::vector<std::string> out;
  out.reserve(count);
  std::vector<std::size_t> index(choices.size(), 0);
  for (std::uint64_t n = 0; n < count; ++n) {
    std::string name = literals[0];
    for (std::size_t k = 0; k < choices.size(); ++k) name += choices[k][index[k]] + literals[k + 1];
    out.push_back(std::move(name));
    for (std::size_t k = choices.size(); k-- > 0;) {
      if (++index[k] < choices[k].size()) break;
      index[k] = 0;
    }
  }
  return out;
}

std::int64_t ShardList::total_size() const {
  std::int64_t n = 0;
  for (const auto& s : shards) {
    if (s.size < 0) return -1;
    n += s.size;
  }
  return n;
}

bool ShardList::sizes_known() const {
  return total_size() >= 0;
}

std::optional<std::vector<std::pair<std::string, std::int64_t>>> read_sizes_json(
    const std::string& folder) {
  const auto path = std::filesystem::path(folder.empty() ? "." : folder) / "sizes.json";
  std::ifstream in(path);
  if (!in) return std::nullopt;
  nlohmann::json j;
  try {
    in >> j;
  } catch (const std::exception& e) {
    throw core::InputError(path.string() + ": not valid JSON (" + e.what() + ")");
  }
  core::require(j.is_object(),
                path.string() + ": expected an object {\"shard.tar\": sample_count, ...}");
  std::vector<std::pair<std::string, std::int64_t>> out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    core::require(
        it.value().is_number_integer() && it.value().get<std::int64_t>() >= 0,
        path.string() + ": the size of '" + it.key() + "' must be a non-negative integer");
    out.emplace_back(it.key(), it.value().get<std::int64_t>());
  }
  return out;
}

ShardList parse_shard_list(const std::string& spec, const std::vector<double>& weights) {
  ShardList list;
  std::vector<std::string> sources;
  std::size_t start = 0;
  while (true) {
    const auto pos = spec.find("::", start);
    sources.push_back(
        spec.substr(start, pos == std::string::npos ? std::string::npos : pos - start));
    if (pos == std::string::npos) break;
    start = pos + 2;
  }
  core::require(weights.empty() || weights.size() == sources.size(),
                "data.source_weights has " + std::to_string(weights.size()) +
                    " values but data.train_shards has " + std::to_string(sources.size()) +
                    " '::'-separated sources");
  std::map<std::string, std::optional<std::map<std::string, std::int64_t>>> sizes_by_folder;
  double wsum = 0;
  for (std::size_t s = 0; s < sources.size(); ++s) {
    core::require(!sources[s].empty(),
                  "data.train_shards '" + spec + "': source " + std::to_string(s) + " is empty");
    const double w = weights.empty() ? 1.0 : weights[s];
    core::require(w >= 0, "data.source_weights: weight " + std::to_string(s) + " is negative");
    list.source_weights.push_back(w);
    wsum += w;
    for (auto& url : expand_braces(sources[s])) {
      Shard sh;
      sh.url = url;
      sh.source = static_cast<int>(s);
      if (url.rfind("pipe:", 0) != 0) {
        const auto p = std::filesystem::path(url);
        const std::string folder = p.parent_path().string();
        auto it = sizes_by_folder.find(folder);
        if (it == sizes_by_folder.end()) {
          std::optional<std::map<std::string, std::int64_t>> m;
          if (auto v = read_sizes_json(folder)) m.emplace(v->begin(), v->end());
          it = sizes_by_folder.emplace(folder, std::move(m)).first;
        }
        if (it->second) {
          auto f = it->second->find(p.filename().string());
          if (f != it->second->end()) sh.size = f->second;
        }
      }
      list.shards.push_back(std::move(sh));
    }
  }
  core::require(wsum > 0, "data.source_weights: the weights add up to 0");
  for (auto& w : list.source_weights) w /= wsum;
  return list;
}

namespace {

// The names in `folder`; nullopt when it is no folder that can be listed.
std::optional<std::unordered_set<std::string>> folder_names(const std::string& folder) {
  std::error_code ec;
  std::filesystem::directory_iterator it(folder.empty() ? "." : folder, ec);
  if (ec) return std::nullopt;
  std::unordered_set<std::string> names;
  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (ec) return std::nullopt;
    names.insert(it->path().filename().string());
  }
  return names;
}

}  // namespace

void check_local_shards(const std::string& spec, const std::string& key) {
  if (spec.empty()) return;
  const auto list = parse_shard_list(spec);
  std::map<std::string, std::optional<std::unordered_set<std::string>>> folders;
  std::int64_t local = 0, missing = 0;
  std::string first;
  for (const auto& sh : list.shards) {
    if (sh.url.rfind("pipe:", 0) == 0) continue;
    ++local;
    const std::filesystem::path p(sh.url);
    const std::string folder = p.parent_path().string();
    auto it = folders.find(folder);
    if (it == folders.end()) it = folders.emplace(folder, folder_names(folder)).first;
    if (it->second && it->second->count(p.filename().string())) continue;
    if (missing++ == 0) first = sh.url;
  }
  if (missing == 0) return;
  const std::string folder = std::filesystem::path(first).parent_path().string();
  const bool no_folder = !folders.at(folder);
  throw core::InputError(
      key + ": " + std::to_string(missing) + " of its " + std::to_string(local) +
      " local shards do not exist; the first: '" + first + "'" +
      (no_folder ? " (there is no folder '" + (folder.empty() ? "." : folder) + "')" : "") +
      "; check the path and the {first..last} range");
}

}  // namespace clipper::data
