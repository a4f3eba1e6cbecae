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
#include "fuzz_util.hpp"

namespace {

std::string g_manifest;  // step 5's manifest as saved

const clipper::checkpoint::Manager& manager() {
  static const clipper::checkpoint::Manager m = [] {
    clipper::core::log::Options lo;
    lo.console_level = clipper::core::log::parse_level("off");
    clipper::core::log::configure(lo);
    clipper::checkpoint::Manager mgr(clipper::fuzz::scratch_dir() + "/run", 0, 1, 2, [] {});
    clipper::checkpoint::State s;
    s.model = {{"w", at::ones({2, 3})}};
    s.optimizer = {{"m", at::zeros({2})}};
    s.trainer = {{"step", 5}};
    s.config_yaml = "train:\n  steps: 10\n";
    s.rank_json = {{"loader", {{"position", 0}}}};
    s.rank_tensors = {{"rng", at::zeros({4}, at::kByte)}};
    std::ifstream in(mgr.save(5, s) + "/manifest.json", std::ios::binary);
    g_manifest.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return mgr;
  }();
  return m;
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
    if (latest) clipper::checkpoint::load(*latest, 0, 1);
  } catch (const clipper::core::InputError&) {
  }
  try {
    clipper::checkpoint::validate(m.checkpoints_dir() + "/step_00000005");
  } catch (const clipper::core::InputError&) {
  }
  if (made) ::rmdir(extra.c_str());
  return 0;
}
