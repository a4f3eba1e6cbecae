#include "clipper/checkpoint/checkpoint.hpp"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/io/safetensors.hpp"

namespace fs = std::filesystem;

namespace clipper::checkpoint {
namespace {

using core::InputError;

constexpr const char* kPrefix = "step_";
constexpr const char* kTmpPrefix = ".tmp-step_";

std::string rank_name(int rank, const char* ext) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "rank_%05d.%s", rank, ext);
  return buf;
}

// Size and CRC-32 of a file, streamed.
std::pair<std::uint64_t, std::uint32_t> size_and_crc(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("checkpoint file '" + path + "' cannot be read");
  std::vector<char> buf(1 << 20);
  uLong crc = crc32(0L, Z_NULL, 0);
  std::uint64_t size = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto n = in.gcount();
    if (n <= 0) break;
    crc = crc32(crc, reinterpret_cast<const Bytef*>(buf.data()), static_cast<uInt>(n));
    size += static_cast<std::uint64_t>(n);
  }
  return {size, static_cast<std::uint32_t>(crc)};
}

void write_json(const std::string& path, const nlohmann::json& j) {
  core::write_file_atomic(path, j.dump(1));
}

nlohmann::json read_json(const std::string& path) {
  const std::string text = core::read_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw InputError("'" + path + "' is not valid JSON: " + e.what());
  }
}

}  // namespace

std::string step_dir_name(std::int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s%08lld", kPrefix, static_cast<long long>(step));
  return buf;
}

std::int64_t step_of(const std::string& dir) {
  const std::string name = fs::path(dir).filename().string();
  if (name.rfind(kPrefix, 0) != 0)
    throw InputError("'" + dir + "' is not a checkpoint folder (step_N)");
  try {
    return std::stoll(name.substr(std::string(kPrefix).size()));
  } catch (...) {
    throw InputError("'" + dir + "' is not a checkpoint folder (step_N)");
  }
}

Manager::Manager(std::string run_dir, int rank, int world_size, std::int64_t keep_last,
                 std::function<void()> barrier)
    : dir_((fs::path(run_dir) / "checkpoints").string()),
      rank_(rank),
      world_size_(world_size),
      keep_last_(keep_last),
      barrier_(std::move(barrier)) {}

std::string Manager::save(std::int64_t step, const State& state) {
  const fs::path final_dir = fs::path(dir_) / step_dir_name(step);
  const fs::path tmp = fs::path(dir_) / (kTmpPrefix + step_dir_name(step).substr(5));
  if (rank_ == 0) {
    fs::create_directories(dir_);
    fs::remove_all(tmp);  // a leftover of an interrupted save
    fs::create_directories(tmp);
  }
  barrier_();
  io::save_safetensors((tmp / rank_name(rank_, "safetensors")).string(), state.rank_tensors);
  write_json((tmp / rank_name(rank_, "json")).string(), state.rank_json);
  if (rank_ == 0) {
    io::save_safetensors((tmp / "model.safetensors").string(), state.model);
    io::save_safetensors((tmp / "optimizer.safetensors").string(), state.optimizer);
    write_json((tmp / "trainer.json").string(), state.trainer);
    core::write_file_atomic((tmp / "config.yaml").string(), state.config_yaml);
  }
  barrier_();
  if (rank_ == 0) {
    nlohmann::ordered_json manifest;
    manifest["magic"] = kMagic;
    manifest["format_version"] = kFormatVersion;
    manifest["step"] = step;
    manifest["world_size"] = world_size_;
    nlohmann::ordered_json files = nlohmann::ordered_json::object();
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(tmp)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    for (const auto& n : names) {
      const auto [size, crc] = size_and_crc((tmp / n).string());
      files[n] = {{"size", size}, {"crc32", crc}};
    }
    manifest["files"] = files;
    core::write_file_atomic((tmp / "manifest.json").string(), manifest.dump(1));
    core::fsync_path(tmp.string());
    if (fs::exists(final_dir)) {
      // The same step saved again (e.g. after a resume): swap the complete new folder in.
      const fs::path old = fs::path(dir_) / (".old-" + final_dir.filename().string());
      fs::remove_all(old);
      core::rename_durable(final_dir.string(), old.string());
      core::rename_durable(tmp.string(), final_dir.string());
      fs::remove_all(old);
    } else {
      core::rename_durable(tmp.string(), final_dir.string());
    }
    prune();
  }
  barrier_();
  return final_dir.string();
}

void Manager::prune() {
  std::vector<std::pair<std::int64_t, fs::path>> found;
  for (const auto& e : fs::directory_iterator(dir_)) {
    const std::string n = e.path().filename().string();
    if (n.rfind(kTmpPrefix, 0) == 0) {
      fs::remove_all(e.path());  // interrupted saves
      continue;
    }
    if (n.rfind(kPrefix, 0) == 0) found.emplace_back(step_of(e.path().string()), e.path());
  }
  std::sort(found.begin(), found.end(), [](auto& a, auto& b) { return a.first > b.first; });
  for (std::size_t i = static_cast<std::size_t>(keep_last_); i < found.size(); ++i)
    fs::remove_all(found[i].second);
}

nlohmann::json validate(const std::string& dir) {
  const std::string mpath = (fs::path(dir) / "manifest.json").string();
  if (!fs::exists(mpath))
    throw InputError("checkpoint '" + dir + "' has no manifest.json (an interrupted save)");
  const nlohmann::json m = read_json(mpath);
  if (m.value("magic", "") != kMagic)
    throw InputError("'" + mpath + "': magic is not '" + std::string(kMagic) + "'");
  if (m.value("format_version", -1) != kFormatVersion)
    throw InputError("'" + mpath + "': format_version " +
                     m.value("format_version", nlohmann::json()).dump() + ", this clipper reads " +
                     std::to_string(kFormatVersion));
  if (!m.contains("files") || !m["files"].is_object())
    throw InputError("'" + mpath + "' lists no files");
  for (const auto& [name, info] : m["files"].items()) {
    const std::string p = (fs::path(dir) / name).string();
    if (!fs::exists(p)) throw InputError("checkpoint file '" + p + "' is missing");
    const auto [size, crc] = size_and_crc(p);
    if (size != info.at("size").get<std::uint64_t>())
      throw InputError("checkpoint file '" + p + "' has " + std::to_string(size) +
                       " bytes, manifest says " +
                       std::to_string(info.at("size").get<std::uint64_t>()) + " (truncated?)");
    if (crc != info.at("crc32").get<std::uint32_t>())
      throw InputError("checkpoint file '" + p + "' fails its CRC-32 check (corrupted)");
  }
  return m;
}

std::optional<std::string> Manager::latest_valid() const {
  if (!fs::exists(dir_)) return std::nullopt;
  std::vector<std::pair<std::int64_t, std::string>> found;
  for (const auto& e : fs::directory_iterator(dir_)) {
    const std::string n = e.path().filename().string();
    if (n.rfind(kPrefix, 0) == 0 && e.is_directory())
      found.emplace_back(step_of(e.path().string()), e.path().string());
  }
  std::sort(found.begin(), found.end(), [](auto& a, auto& b) { return a.first > b.first; });
  for (const auto& [step, path] : found) {
    try {
      validate(path);
      return path;
    } catch (const InputError& e) {
      CLIPPER_WARN("skipping checkpoint " << path << ": " << e.what());
    }
  }
  return std::nullopt;
}

State load(const std::string& dir, int rank, int world_size) {
  const nlohmann::json m = validate(dir);
  const int saved_world = m.at("world_size").get<int>();
  if (saved_world != world_size)
    throw InputError("checkpoint '" + dir + "' was written by " + std::to_string(saved_world) +
                     " ranks; this run has " + std::to_string(world_size) +
                     " (resume with the same world size; see docs/training.md)");
  const fs::path d(dir);
  State s;
  s.model = io::load_safetensors((d / "model.safetensors").string());
  s.optimizer = io::load_safetensors((d / "optimizer.safetensors").string());
  s.trainer = read_json((d / "trainer.json").string());
  s.config_yaml = core::read_file((d / "config.yaml").string());
  s.rank_json = read_json((d / rank_name(rank, "json")).string());
  s.rank_tensors = io::load_safetensors((d / rank_name(rank, "safetensors")).string());
  return s;
}

}  // namespace clipper::checkpoint
