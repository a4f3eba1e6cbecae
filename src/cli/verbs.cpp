#include "verbs.hpp"

#include <map>

namespace clipper::cli {
namespace {
std::map<std::string, VerbSetup>& registry() {
  static std::map<std::string, VerbSetup> r;
  return r;
}
}  // namespace

VerbRegistrar::VerbRegistrar(const char* name, VerbSetup setup) {
  registry()[name] = setup;
}

void add_all_verbs(CLI::App& app, Action* action) {
  for (const auto& [name, setup] : registry()) setup(app, action);
}

// Here, not in verb_bench.cpp: that one needs the data libraries, `bench train` and `bench loss`
// do not (the GPU check's build has no data libraries).
CLI::App* bench_group(CLI::App& app) {
  for (auto* sub : app.get_subcommands([](CLI::App*) { return true; }))
    if (sub->get_name() == "bench") return sub;
  auto* b = app.add_subcommand("bench", "Benchmarks: loader, train step, loss memory");
  b->require_subcommand(1);
  return b;
}

}  // namespace clipper::cli
