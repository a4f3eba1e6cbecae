// Saves checkpoints of a few MB in a loop until killed: the kill -9 test's victim. It prints each
// step once committed; with "async" the files are written by the background thread while the
// loop overwrites the live tensors, as training would.
// usage: checkpoint_writer RUN_DIR [async]
#include <ATen/ATen.h>

#include <iostream>
#include <string>

#include "clipper/checkpoint/checkpoint.hpp"
#include "clipper/dist/process_group.hpp"
#include "test_parts.hpp"

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) return 2;
  clipper::checkpoint::ManagerOptions o;
  o.keep_last = 3;
  o.async = argc == 3 && std::string(argv[2]) == "async";
  o.on_commit = [](const clipper::checkpoint::SaveReport& r) { std::cout << r.step << std::endl; };
  clipper::checkpoint::Manager m(argv[1], o, std::make_shared<clipper::dist::ProcessGroup>());
  clipper::test::HeldParts p;
  for (std::int64_t step = 1;; ++step) {
    p.model.held.tensors = {{"w", at::full({512, 1024}, static_cast<float>(step))}};
    p.optimizer.held.tensors = {{"w.exp_avg", at::full({512, 1024}, static_cast<float>(-step))}};
    p.trainer.held.json = {{"step", step}};
    p.loader.held.json = {{"position", step * 10}};
    p.rng.held.tensors = {{"rng", at::arange(16, at::kByte)}};
    m.save(step, p.parts(), "model:\n  name: tiny-vit\n");
    // "Training" changes the live state while the save may still be writing.
    p.model.held.tensors[0].second.fill_(-1.0f);
    m.poll();
  }
}
