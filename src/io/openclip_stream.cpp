#include "clipper/io/openclip_stream.hpp"

#include <ATen/ATen.h>

#include <exception>
#include <filesystem>
#include <map>
#include <memory>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/log.hpp"
#include "clipper/core/version.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/io/safetensors_writer.hpp"
#include "clipper/model/lora.hpp"
#include "clipper/model/siglip2.hpp"

namespace fs = std::filesystem;

namespace clipper::io {
namespace {

// The adapter prefix ("<module>.lora.") of each weight an adapter merges into.
std::map<std::string, std::string> merged_weights(const TensorList& state) {
  std::map<std::string, std::string> out;
  for (const auto& [name, t] : state) {
    if (!model::is_lora_tensor(name) || name.size() < 6 ||
        name.compare(name.size() - 6, 6, "lora.A") != 0)
      continue;
    const std::string prefix = name.substr(0, name.size() - 1);
    out[prefix.substr(0, prefix.size() - 5) + "weight"] = prefix;
  }
  return out;
}

// One tensor of the export on the CPU: the weight with its adapter merged, or the tensor itself.
at::Tensor exported(const std::string& name, const at::Tensor& t,
                    const std::map<std::string, at::Tensor>& by_name,
                    const std::map<std::string, std::string>& merged, const std::string& origin) {
  const auto it = merged.find(name);
  if (it == merged.end()) return t.detach().to(at::kCPU);
  TensorList one{{name, t.detach().to(at::kCPU)}};
  for (const char* part : {"A", "B", "scale"}) {
    const auto p = by_name.find(it->second + part);
    if (p != by_name.end()) one.emplace_back(p->first, p->second.detach().to(at::kCPU));
  }
  model::merge_lora_state(one, origin);
  return one.at(0).second;
}

}  // namespace

void export_openclip_streamed(const model::ClipImpl& model, const model::ModelSpec& spec,
                              const std::string& out_dir, bool write) {
  at::NoGradGuard no_grad;
  TensorList state;
  for (const auto& [name, t] : model.state_dict())
    if (!model::is_siglip2_tensor(name)) state.emplace_back(name, t);  // training-only heads
  const std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
  const auto merged = merged_weights(state);
  std::vector<SafetensorsEntry> entries;
  for (const auto& [name, t] : state)
    if (!model::is_lora_tensor(name)) entries.push_back({name, t.scalar_type(), t.sizes().vec()});
  const std::string weights = (fs::path(out_dir) / "open_clip_model.safetensors").string();
  std::unique_ptr<SafetensorsWriter> writer;
  if (write) {
    fs::create_directories(out_dir);
    writer = std::make_unique<SafetensorsWriter>(
        weights, entries,
        std::map<std::string, std::string>{
            {"format", "pt"}, {"producer", "clipper " + core::version()}, {"model", spec.name}});
  }
  // Every tensor is read even after a failed write: the other ranks gather with this one.
  std::exception_ptr failed;
  for (const auto& e : entries) {
    const at::Tensor t = exported(e.name, by_name.at(e.name), by_name, merged, spec.name);
    if (!writer) continue;
    try {
      writer->write(t);
    } catch (...) {
      failed = std::current_exception();
      writer.reset();
    }
  }
  if (failed) std::rethrow_exception(failed);
  if (!writer) return;
  writer->commit();
  core::write_file_atomic((fs::path(out_dir) / "open_clip_config.json").string(),
                          openclip_config_json(spec));
  if (!merged.empty())
    CLIPPER_INFO("merged " << merged.size() << " LoRA adapters into their weights for the export");
  CLIPPER_INFO("exported " << spec.name << " in OpenCLIP format to " << out_dir);
}

}  // namespace clipper::io
