// libFuzzer harness: world discovery from launcher environment variables. The input is
// "NAME=VALUE" lines (torchrun, Open MPI, SLURM variables); the first line's value is also read
// as a SLURM node list and tasks-per-node spec.
#include <cstdint>

#include "clipper/config/config.hpp"
#include "clipper/core/error.hpp"
#include "clipper/dist/world.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string rest = clipper::fuzz::bytes_of(data, size);
  clipper::dist::Environment env;
  std::string first;
  bool have_first = false;
  while (!rest.empty()) {
    const std::string line = clipper::fuzz::take_line(rest);
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    env[line.substr(0, eq)] = line.substr(eq + 1);
    if (!have_first) first = line.substr(eq + 1), have_first = true;
  }
  try {
    const auto w = clipper::dist::discover_world(clipper::config::DistConfig{}, env);
    if (w.rank < 0 || w.rank >= w.world_size || w.local_rank < 0) __builtin_trap();
    (void)w.describe();
  } catch (const clipper::core::InputError&) {
  }
  try {
    clipper::dist::expand_slurm_nodelist(first);
  } catch (const clipper::core::InputError&) {
  }
  try {
    clipper::dist::first_slurm_host(first);
  } catch (const clipper::core::InputError&) {
  }
  try {
    clipper::dist::expand_slurm_tasks_per_node(first);
  } catch (const clipper::core::InputError&) {
  }
  return 0;
}
