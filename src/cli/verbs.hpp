#pragma once
// Each `clipper <verb>` lives in its own verb_<name>.cpp and registers itself with
// CLIPPER_REGISTER_VERB; main.cpp adds every registered verb to the application. Verbs are thin
// wrappers over library calls that the tests also make.
#include <CLI/CLI.hpp>

#include <functional>
#include <map>
#include <string>

#include "clipper/config/config.hpp"

namespace clipper::cli {

// A verb's work, run after parsing; returns the process exit code.
using Action = std::function<int()>;
// Adds the verb's subcommand to `app`; its callback stores the work in `*action`.
using VerbSetup = void (*)(CLI::App& app, Action* action);

struct VerbRegistrar {
  VerbRegistrar(const char* name, VerbSetup setup);
};

// Adds every registered verb to `app`, in name order.
void add_all_verbs(CLI::App& app, Action* action);

// `clipper bench`, the group each benchmark verb (verb_bench*.cpp) adds its subcommand under;
// made by whichever of them registers first.
CLI::App* bench_group(CLI::App& app);

// A flag whose values are a config choice (config::Choices<E>), spelled as in the config files.
template <class E>
CLI::Option* add_choice_option(CLI::App* app, const std::string& name, E& target,
                               const std::string& help) {
  std::map<std::string, E> names;
  for (const auto& [n, value] : config::Choices<E>::values) names.emplace(n, value);
  return app->add_option(name, target, help)
      ->transform(CLI::CheckedTransformer(names))
      ->default_str(config::name_of(target));
}

}  // namespace clipper::cli

#define CLIPPER_REGISTER_VERB(name, setup) \
  static const ::clipper::cli::VerbRegistrar clipper_verb_registrar_##name(#name, setup)
