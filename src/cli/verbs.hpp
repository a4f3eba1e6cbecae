#pragma once
// Each `clipper <verb>` lives in its own verb_<name>.cpp and registers itself with
// CLIPPER_REGISTER_VERB; main.cpp adds every registered verb to the application. Verbs are thin
// wrappers over library calls that the tests also make.
#include <CLI/CLI.hpp>

#include <functional>
#include <string>

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

}  // namespace clipper::cli

#define CLIPPER_REGISTER_VERB(name, setup) \
  static const ::clipper::cli::VerbRegistrar clipper_verb_registrar_##name(#name, setup)
