#include "sharded_checkpoint.hpp"

#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/digest.hpp"
#include "clipper/core/error.hpp"
#include "clipper/optim/sharded_adamw.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace clipper::io::detail {
namespace {

json read_json(const fs::path& p) {
  try {
    return json::parse(core::read_file(p.string()));
  } catch (const json::exception& e) {
    throw core::InputError("'" + p.string() + "' is not valid JSON: " + e.what());
  }
}

fs::path rank_file(const std::string& dir, int rank, const char* ext) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "rank_%05d.%s", rank, ext);
  return fs::path(dir) / buf;
}

// A rank file against the folder's manifest.json (its size and CRC-32, as a checkpoint load
// checks them): InputError naming the file. Files the manifest does not list are left alone.
void check_rank_file(const fs::path& file) {
  const fs::path manifest = file.parent_path() / "manifest.json";
  std::error_code ec;
  if (!fs::is_regular_file(manifest, ec)) return;
  const json m = read_json(manifest);
  const std::string name = file.filename().string();
  if (!m.contains("files") || !m["files"].is_object() || !m["files"].contains(name)) return;
  const json& info = m["files"][name];
  if (!fs::is_regular_file(file, ec))
    throw core::InputError("checkpoint file '" + file.string() + "' is missing");
  const auto digest = core::digest_of_file(file.string());
  if (digest.size != info.value("size", digest.size) ||
      digest.crc32 != info.value("crc32", digest.crc32))
    throw core::InputError("checkpoint file '" + file.string() +
                           "' fails its size / CRC-32 check against manifest.json (corrupted)");
}

json read_rank_json(const std::string& dir, int rank) {
  const fs::path p = rank_file(dir, rank, "json");
  check_rank_file(p);
  return read_json(p);
}

}  // namespace

TensorList assemble_rank_shards(const std::string& dir, const std::string& part,
                                const std::string& key, const std::vector<std::string>& names,
                                const std::vector<std::vector<std::int64_t>>& shapes) {
  const fs::path first = rank_file(dir, 0, "json");
  std::error_code ec;
  if (!fs::is_regular_file(first, ec))
    throw core::InputError("checkpoint '" + dir + "' was saved with dist.zero 3 and has no " +
                           first.filename().string() + " with the shards of its parameters");
  const json j0 = read_rank_json(dir, 0);
  if (!j0.contains(part) || !j0[part].is_object() || !j0[part].contains("world_size"))
    throw core::InputError(first.string() + " holds no '" + part + "' shards");
  const int world = j0[part]["world_size"].get<int>();
  optim::SavedFlatShards saved;
  saved.where = dir;
  for (int r = 0; r < world; ++r) {
    const json j = r == 0 ? j0 : read_rank_json(dir, r);
    check_rank_file(rank_file(dir, r, "safetensors"));
    saved.json.push_back(j.contains(part) ? j[part] : json());
  }
  saved.tensors = [&dir, &part](int r) {
    optim::NamedTensors mine;
    const std::string prefix = part + "/";
    for (auto& [n, t] : load_safetensors(rank_file(dir, r, "safetensors").string()))
      if (n.rfind(prefix, 0) == 0) mine.emplace_back(n.substr(prefix.size()), std::move(t));
    return mine;
  };
  // The dtype the ranks saved (every unit of a sharded model holds one).
  const auto t0 = saved.tensors(0);
  const auto dtype = t0.empty() ? at::kFloat : t0.front().second.scalar_type();
  TensorList out;
  std::vector<at::Tensor> whole;
  for (std::size_t i = 0; i < names.size(); ++i) {
    out.emplace_back(names[i], at::empty(shapes[i], at::TensorOptions().dtype(dtype)));
    whole.push_back(out.back().second);
  }
  optim::load_whole_from_flat_shards(saved, key, names, whole);
  return out;
}

bool is_sharded_checkpoint(const std::string& dir) {
  const fs::path listing = fs::path(dir) / "model.json";
  std::error_code ec;
  if (!fs::is_regular_file(listing, ec)) return false;
  const json j = read_json(listing);
  return j.is_object() && j.contains("sharded_parameters");
}

void add_sharded_parameters(TensorList& tensors, const std::string& model_file) {
  const fs::path p(model_file);
  const fs::path listing = p.parent_path() / "model.json";
  std::error_code ec;
  if (p.filename() != "model.safetensors" || !fs::is_regular_file(listing, ec)) return;
  const json j = read_json(listing);
  if (!j.is_object() || !j.contains("sharded_parameters")) return;
  const auto names = j["sharded_parameters"].get<std::vector<std::string>>();
  if (!j.contains("sharded_shapes"))
    throw core::InputError(listing.string() +
                           " lists sharded parameters without their shapes (a checkpoint of an "
                           "older clipper): resume it on any dist.zero and save again");
  const auto shapes = j["sharded_shapes"].get<std::vector<std::vector<std::int64_t>>>();
  if (shapes.size() != names.size())
    throw core::InputError(listing.string() + ": " + std::to_string(names.size()) +
                           " sharded parameters but " + std::to_string(shapes.size()) + " shapes");
  for (auto& item :
       assemble_rank_shards(p.parent_path().string(), "params", "param", names, shapes))
    tensors.push_back(std::move(item));
}

TensorList sharded_averages(const std::string& dir, const TensorList& weights) {
  const fs::path listing = fs::path(dir) / "ema.json";
  std::error_code ec;
  if (!fs::is_regular_file(listing, ec)) return {};
  const json j = read_json(listing);
  if (!j.is_object() || !j.contains("sharded_parameters")) return {};
  const auto names = j["sharded_parameters"].get<std::vector<std::string>>();
  std::map<std::string, std::vector<std::int64_t>> shape_of;
  for (const auto& [n, t] : weights) shape_of[n] = t.sizes().vec();
  std::vector<std::vector<std::int64_t>> shapes;
  for (const auto& n : names) {
    const auto it = shape_of.find(n);
    if (it == shape_of.end())
      throw core::InputError(listing.string() + ": the average of '" + n +
                             "' is not a tensor of the model's weights");
    shapes.push_back(it->second);
  }
  return assemble_rank_shards(dir, "ema_shards", "ema", names, shapes);
}

}  // namespace clipper::io::detail
