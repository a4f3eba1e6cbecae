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

}  // namespace clipper::cli
