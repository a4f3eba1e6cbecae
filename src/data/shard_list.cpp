#include "clipper/data/shard_list.hpp"

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "clipper/core/error.hpp"

namespace clipper::data {
namespace {

bool all_digits(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

std::vector<std::string> expand_one(const std::string& body, const std::string& pattern) {
  std::vector<std::string> out;
  const auto dots = body.find("..");
  if (dots != std::string::npos) {
    const std::string a = body.substr(0, dots), b = body.substr(dots + 2);
    core::require(all_digits(a) && all_digits(b), "shard pattern '" + pattern + "': range {" +
                                                      body + "} needs two non-negative integers");
    const long long lo = std::stoll(a), hi = std::stoll(b);
    core::require(lo <= hi, "shard pattern '" + pattern + "': range {" + body + "} goes backwards");
    core::require(hi - lo < 10'000'000,
                  "shard pattern '" + pattern + "': range {" + body + "} is too large");
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
  const auto open = pattern.find('{');
  const auto close_first = pattern.find('}');
  if (open == std::string::npos) {
    core::require(close_first == std::string::npos,
                  "shard pattern '" + pattern + "': '}' without a matching '{'");
    return {pattern};
  }
  const auto close = pattern.find('}', open);
  core::require(close != std::string::npos,
                "shard pattern '" + pattern + "': '{' without a matching '}'");
  core::require(close_first >= open, "shard pattern '" + pattern + "': '}' before '{'");
  const std::string body = pattern.substr(open + 1, close - open - 1);
  core::require(body.find('{') == std::string::npos,
                "shard pattern '" + pattern + "': nested braces are not supported");
  const std::string head = pattern.substr(0, open);
  const auto tails = expand_braces(pattern.substr(close + 1));
  std::vector<std::string> out;
  for (const auto& alt : expand_one(body, pattern))
    for (const auto& t : tails) out.push_back(head + alt + t);
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

}  // namespace clipper::data
