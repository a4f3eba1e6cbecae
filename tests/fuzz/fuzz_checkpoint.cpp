// libFuzzer harness: checkpoint manifest validation and the latest-checkpoint lookup. A valid
// checkpoint (step 5) is written once at start-up; each input is a folder name (first line, made
// into step_<name>) and the bytes of step 5's manifest.json (the rest; none: the saved one). Then
// latest_valid(), validate() and load() run on what is there.
#include <sys/stat.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <cctype>
#include <cstdint>
#include <fstream>

#include "clipper/checkpoint/checkpoint.hpp"
#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/dist/process_group.hpp"
#include "fuzz_util.hpp"

namespace {

std::string g_manifest;  // step 5's manifest as saved

// A part that keeps what it is given (the trainer's list: model, optimizer, trainer, rng, loader).
struct Held : clipper::checkpoint::Stateful {
  clipper::checkpoint::PartState held;
  clipper::checkpoint::PartState state() const override { return held; }
  void load_state(const clipper::checkpoint::PartState& s, const std::string&) override {
    held = s;
  }
};
clipper::checkpoint::Parts g_parts;

const clipper::checkpoint::Manager& manager() {
  static const auto m = [] {
    clipper::core::log::Options lo;
    lo.console_level = clipper::core::log::parse_level("off");
    clipper::core::log::configure(lo);
    auto mgr = std::make_unique<clipper::checkpoint::Manager>(
        clipper::fuzz::scratch_dir() + "/run", clipper::checkpoint::ManagerOptions{2},
        std::make_shared<clipper::dist::ProcessGroup>());
    static Held model, optimizer, trainer, rng, loader;
    model.held.tensors = {{"w", at::ones({2, 3})}};
    optimizer.held.tensors = {{"m", at::zeros({2})}};
    trainer.held.json = {{"step", 5}};
    loader.held.json = {{"position", 0}};
    rng.held.tensors = {{"cpu_rng", at::zeros({4}, at::kByte)}};
    g_parts = {{"model", clipper::checkpoint::Scope::global, &model},
               {"optimizer", clipper::checkpoint::Scope::global, &optimizer},
               {"trainer", clipper::checkpoint::Scope::global, &trainer},
               {"rng", clipper::checkpoint::Scope::per_rank, &rng},
               {"loader", clipper::checkpoint::Scope::per_rank, &loader}};
    std::ifstream in(mgr->save(5, g_parts, "train:\n  steps: 10\n") + "/manifest.json",
                     std::ios::binary);
    g_manifest.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return mgr;
  }();
  return *m;
}

std::string folder_name(const std::string& line) {
  std::string n;
  for (const char c : line.substr(0, 40))
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.') n += c;
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto& m = manager();
  std::string rest = clipper::fuzz::bytes_of(data, size);
  const std::string name = "step_" + folder_name(clipper::fuzz::take_line(rest));
  const std::string step5 = clipper::checkpoint::step_dir_name(5);
  const std::string extra = m.checkpoints_dir() + "/" + name;
  const bool made = name != step5 && ::mkdir(extra.c_str(), 0700) == 0;
  // An input of a name alone keeps the valid manifest (a seed for the folder-name lookup).
  clipper::fuzz::write_scratch("run/checkpoints/step_00000005/manifest.json",
                               rest.empty() ? g_manifest : rest);
  // latest_valid() skips what is not a valid checkpoint: it never throws.
  const auto latest = m.latest_valid();
  try {
    if (latest) m.load(latest->dir, g_parts);
  } catch (const clipper::core::InputError&) {
  }
  try {
    clipper::checkpoint::validate(m.checkpoints_dir() + "/step_00000005");
  } catch (const clipper::core::InputError&) {
  }
  if (made) ::rmdir(extra.c_str());
  return 0;
}
