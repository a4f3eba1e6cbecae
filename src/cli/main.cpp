// clipper <verb> ...: the command line. Exit codes: 0 done, 1 error, 2 usage.
#include <torch/cuda.h>
#include <torch/version.h>

#include <c10/util/Exception.h>

#include <cstdlib>
#include <iostream>

#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/core/redact.hpp"
#include "clipper/core/version.hpp"
#include "clipper/dist/launch.hpp"
#include "verbs.hpp"

namespace {

std::string version_text() {
  return "clipper " + clipper::core::version() + " (LibTorch " + TORCH_VERSION +
         ", CUDA available: " + (torch::cuda::is_available() ? "yes" : "no") + ")";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"clipper: contrastive image-text pretraining (CLIP, SigLIP) on LibTorch", "clipper"};
  app.require_subcommand(1);
  app.fallthrough(false);
  bool show_version = false;
  app.add_flag("--version", show_version, "print the clipper and LibTorch versions and exit");
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off");

  clipper::cli::Action action;
  clipper::cli::add_all_verbs(app, &action);

  try {
    // --version alone needs no verb.
    if (argc == 2 && std::string(argv[1]) == "--version") {
      std::cout << version_text() << "\n";
      return 0;
    }
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "error: " << e.what() << "\n\n";
    // The usage of the deepest verb that was recognised.
    const CLI::App* where = &app;
    for (bool deeper = true; deeper;) {
      deeper = false;
      for (const auto* sub : where->get_subcommands())
        if (sub->parsed()) {
          where = sub;
          deeper = true;
          break;
        }
    }
    std::cerr << where->help();
    return 2;
  }
  try {
    clipper::core::log::Options lo;
    lo.console_level = clipper::core::log::parse_level(log_level);
    clipper::core::log::configure(lo);
    clipper::dist::watch_launcher();  // a rank of `clipper launch` ends when its launcher is gone
    if (!action) {
      std::cerr << app.help();
      return 2;
    }
    return action();
  } catch (const clipper::core::InputError& e) {
    std::cerr << "error: " << clipper::core::redact_secrets(e.what()) << "\n";
    return 1;
  } catch (const c10::Error& e) {
    // A LibTorch check: its message without the C++ frames (CLIPPER_TORCH_BACKTRACE=1 for those).
    const char* bt = std::getenv("CLIPPER_TORCH_BACKTRACE");
    std::cerr << "error: "
              << clipper::core::redact_secrets(bt && *bt == '1' ? e.what()
                                                                : e.what_without_backtrace())
              << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << clipper::core::redact_secrets(e.what()) << "\n";
    return 1;
  }
}
