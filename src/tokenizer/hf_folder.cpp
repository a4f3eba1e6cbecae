// The "hf:" tokenizer's folder: where a NAME is looked for, which files it needs, its JSON.
#include "hf_folder.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <vector>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/tokenizer/hf_files.hpp"

namespace clipper::tokenizer {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// huggingface_hub's cache folder (constants.HF_HUB_CACHE).
fs::path hf_hub_cache() {
  if (!env("HF_HUB_CACHE").empty()) return env("HF_HUB_CACHE");
  if (!env("HF_HOME").empty()) return fs::path(env("HF_HOME")) / "hub";
  if (!env("XDG_CACHE_HOME").empty()) return fs::path(env("XDG_CACHE_HOME")) / "huggingface/hub";
  return fs::path(env("HOME").empty() ? "." : env("HOME")) / ".cache/huggingface/hub";
}

// The snapshot that refs/main names, else the newest one; "" when there is none.
std::string hub_snapshot(const fs::path& repo) {
  std::error_code ec;
  std::ifstream ref(repo / "refs" / "main");
  std::string hash;
  if (ref >> hash && fs::is_directory(repo / "snapshots" / hash, ec))
    return (repo / "snapshots" / hash).string();
  fs::path newest;
  fs::file_time_type newest_time{};
  for (fs::directory_iterator it(repo / "snapshots", ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_directory(ec)) continue;
    const auto t = fs::last_write_time(it->path(), ec);
    if (newest.empty() || t > newest_time) newest = it->path(), newest_time = t;
  }
  return newest.string();
}

// A repository id is NAME or ORG/NAME; anything else is a path.
bool looks_like_repo_id(const std::string& s) {
  if (s.empty() || s.front() == '/' || s.front() == '.' || s.front() == '~' || s.back() == '/')
    return false;
  return std::count(s.begin(), s.end(), '/') <= 1;
}

std::string not_found(const std::string& name, const std::vector<std::string>& looked) {
  std::string msg = "Hugging Face tokenizer '" + name + "' not found; looked in:";
  for (const auto& l : looked) msg += "\n  " + l;
  if (env("CLIPPER_HF_TOKENIZER_DIRS").empty())
    msg += "\n  ($CLIPPER_HF_TOKENIZER_DIRS is not set)";
  return msg + "\nclipper downloads nothing: give the folder as hf:PATH, put it at <dir>/" + name +
         " for a dir listed in $CLIPPER_HF_TOKENIZER_DIRS (':'-separated), or copy the Hugging "
         "Face cache of a machine that has it (e.g. after `hf download " +
         name +
         "`) and set $HF_HOME. The folder needs tokenizer_config.json and the SentencePiece "
         "model (spiece.model or tokenizer.model).";
}

}  // namespace

std::string find_hf_tokenizer_dir(const std::string& name) {
  core::require(!name.empty(),
                "tokenizer 'hf:' needs a folder or a repository id: hf:NAME_OR_PATH");
  std::error_code ec;
  if (fs::is_directory(name, ec)) return name;
  core::require(!fs::exists(name, ec), "tokenizer 'hf:" + name + "': " + name +
                                           " is a file; hf: needs a Hugging Face tokenizer folder");
  core::require(looks_like_repo_id(name),
                "tokenizer 'hf:" + name + "': folder " + name + " does not exist");
  std::vector<std::string> looked;
  const std::string dirs = env("CLIPPER_HF_TOKENIZER_DIRS");
  for (std::size_t pos = 0; pos <= dirs.size();) {
    const std::size_t colon = std::min(dirs.find(':', pos), dirs.size());
    const std::string dir = dirs.substr(pos, colon - pos);
    pos = colon + 1;
    if (dir.empty()) continue;
    const std::string candidate = (fs::path(dir) / name).string();
    if (fs::is_directory(candidate, ec)) return candidate;
    looked.push_back(candidate);
  }
  std::string repo_folder = "models--";  // huggingface_hub's models--ORG--NAME
  for (char c : name) repo_folder += c == '/' ? std::string("--") : std::string(1, c);
  const fs::path repo = hf_hub_cache() / repo_folder;
  const std::string snapshot = hub_snapshot(repo);
  if (!snapshot.empty()) return snapshot;
  looked.push_back((repo / "snapshots" / "<refs/main or the newest>").string() +
                   " (the Hugging Face cache)");
  throw core::InputError(not_found(name, looked));
}

}  // namespace clipper::tokenizer

namespace clipper::tokenizer::detail {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json read_json(const fs::path& path, const json::parser_callback_t& keep = nullptr) {
  std::ifstream in(path, std::ios::binary);
  core::require(static_cast<bool>(in), "cannot read " + path.string());
  try {
    json j = json::parse(in, keep);
    core::require(j.is_object(), path.string() + ": expected a JSON object");
    return j;
  } catch (const json::exception& e) {
    throw core::InputError(path.string() + ": not valid JSON (" + e.what() + ")");
  }
}

// tokenizer.json's post_processor alone: its vocabulary and merges (tens of MB for Gemma) are
// parsed but not kept.
json read_post_processor(const fs::path& path) {
  const json::parser_callback_t keep = [](int depth, json::parse_event_t event, json& parsed) {
    return !(depth == 1 && event == json::parse_event_t::key && parsed != "post_processor");
  };
  const json j = read_json(path, keep);
  return j.contains("post_processor") ? j["post_processor"] : json();
}

HfKind kind_of(const std::string& cls, const fs::path& config) {
  if (cls == "T5Tokenizer" || cls == "T5TokenizerFast") return HfKind::t5;
  if (cls == "GemmaTokenizer" || cls == "GemmaTokenizerFast") return HfKind::gemma;
  throw core::InputError(config.string() + ": tokenizer_class '" + cls +
                         "' is not one the hf: tokenizer reads; expected T5Tokenizer (SigLIP) or "
                         "GemmaTokenizer (SigLIP 2), with or without Fast");
}

std::string model_file(const fs::path& dir, HfKind kind, bool has_json) {
  const char* want = kind == HfKind::t5 ? "spiece.model" : "tokenizer.model";
  std::error_code ec;
  for (const char* name : {want, kind == HfKind::t5 ? "tokenizer.model" : "spiece.model"})
    if (fs::is_regular_file(dir / name, ec)) return (dir / name).string();
  throw core::InputError(
      "Hugging Face tokenizer folder " + dir.string() + " has no SentencePiece model " + want +
      (has_json ? " (tokenizer.json alone is not enough: clipper encodes with libsentencepiece)"
                : "") +
      "; copy " + want + " from the model's repository (it ships beside tokenizer.json)");
}

}  // namespace

HfFolder read_hf_folder(const std::string& dir_name) {
  const fs::path dir(dir_name);
  HfFolder f;
  f.dir = dir_name;
  std::error_code ec;
  const fs::path config = dir / "tokenizer_config.json";
  core::require(fs::is_regular_file(config, ec),
                "Hugging Face tokenizer folder " + dir_name +
                    " has no tokenizer_config.json (it names the tokenizer class and its special "
                    "tokens)");
  f.config = read_json(config);
  const auto cls = f.config.find("tokenizer_class");
  core::require(cls != f.config.end() && cls->is_string(),
                config.string() + ": no tokenizer_class (expected T5Tokenizer or GemmaTokenizer)");
  f.tokenizer_class = cls->get<std::string>();
  f.kind = kind_of(f.tokenizer_class, config);
  if (fs::is_regular_file(dir / "special_tokens_map.json", ec))
    f.special_map = read_json(dir / "special_tokens_map.json");
  else
    f.special_map = json::object();
  if (fs::is_regular_file(dir / "tokenizer.json", ec)) {
    f.tokenizer_json = (dir / "tokenizer.json").string();
    f.post_processor = read_post_processor(f.tokenizer_json);
  }
  f.model_path = model_file(dir, f.kind, !f.tokenizer_json.empty());
  return f;
}

}  // namespace clipper::tokenizer::detail

namespace clipper::tokenizer {

void copy_hf_tokenizer_files(const std::string& spec, const std::string& out_dir) {
  namespace fs = std::filesystem;
  core::require(spec.rfind("hf:", 0) == 0,
                "copy_hf_tokenizer_files: tokenizer '" + spec +
                    "' is not a Hugging Face tokenizer (hf:NAME_OR_PATH)");
  const fs::path dir = find_hf_tokenizer_dir(spec.substr(3));
  detail::read_hf_folder(dir.string());  // the same checks as the tokenizer's
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  core::require(!ec, "cannot create " + out_dir + ": " + ec.message());
  for (const char* name : {"tokenizer_config.json", "special_tokens_map.json", "tokenizer.json",
                           "added_tokens.json", "spiece.model", "tokenizer.model"}) {
    if (!fs::is_regular_file(dir / name, ec)) continue;
    core::write_file_atomic((fs::path(out_dir) / name).string(),
                            core::read_file((dir / name).string()));
  }
}

}  // namespace clipper::tokenizer
