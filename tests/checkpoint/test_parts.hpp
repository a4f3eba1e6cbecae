#pragma once
// A Stateful part that holds what it is given, for the checkpoint tests.
#include "clipper/checkpoint/stateful.hpp"

namespace clipper::test {

struct HeldPart : checkpoint::Stateful {
  checkpoint::PartState held;
  checkpoint::PartState state() const override { return held; }
  void load_state(const checkpoint::PartState& s, const std::string&) override { held = s; }
};

// model, optimizer, trainer (global); rng, loader (per rank): the trainer's list.
struct HeldParts {
  HeldPart model, optimizer, trainer, rng, loader;
  checkpoint::Parts parts() {
    using checkpoint::Scope;
    return {{"model", Scope::global, &model},
            {"optimizer", Scope::global, &optimizer},
            {"trainer", Scope::global, &trainer},
            {"rng", Scope::per_rank, &rng},
            {"loader", Scope::per_rank, &loader}};
  }
};

}  // namespace clipper::test
