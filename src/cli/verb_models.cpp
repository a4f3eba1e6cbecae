// clipper models [--names]: the architectures found in configs/models with size and compute.
#include <cstdio>
#include <iostream>
#include <memory>

#include "clipper/core/error.hpp"
#include "clipper/model/flops.hpp"
#include "clipper/model/model_spec.hpp"
#include "verbs.hpp"

namespace clipper::cli {
namespace {

void setup_models_verb(CLI::App& app, Action* action) {
  auto* verb = app.add_subcommand(
      "models",
      "List the model architectures (configs/models/*.yaml) with parameter count and "
      "forward GFLOPs per sample");
  auto names_only = std::make_shared<bool>(false);
  verb->add_flag("--names", *names_only, "print the names only");
  verb->callback([action, names_only] {
    *action = [names_only] {
      const auto names = model::list_model_specs();
      if (*names_only) {
        for (const auto& n : names) std::cout << n << "\n";
        return 0;
      }
      char line[256];
      std::snprintf(line, sizeof line, "%-30s %-8s %11s %11s %11s %10s %10s %10s %10s\n", "name",
                    "image", "params", "image", "text", "GFLOPs", "image", "text", "run");
      std::cout << line;
      for (const auto& n : names) {
        model::ModelSpec s;
        try {
          s = model::load_model_spec(n);
        } catch (const core::InputError& e) {
          std::cerr << "warning: " << e.what() << "\n";
          continue;
        }
        const auto p = model::count_parameters(s);
        const auto f = model::count_forward_flops(s);
        std::snprintf(line, sizeof line,
                      "%-30s %-8s %10.2fM %10.2fM %10.2fM %10.2f %10.2f %10.2f %10.2f\n", n.c_str(),
                      model::name_of(s.image_tower), p.total() / 1e6, p.image / 1e6, p.text / 1e6,
                      f.total() / 1e9, f.image / 1e9, f.text / 1e9, f.executed() / 1e9);
        std::cout << line;
      }
      return 0;
    };
  });
}

}  // namespace

CLIPPER_REGISTER_VERB(models, setup_models_verb);

}  // namespace clipper::cli
