// Uses the installed clipper: loads a config with an override and prints one key.
#include <clipper/config/loader.hpp>
#include <clipper/core/version.hpp>

#include <iostream>

int main() {
  auto cfg = clipper::config::load({}, {"model.name=ViT-B-32", "optim.lr=0.25"});
  std::cout << "clipper " << clipper::core::version() << " lr=" << cfg.optim.lr
            << " model=" << cfg.model.name << "\n";
  return cfg.optim.lr == 0.25 ? 0 : 1;
}
