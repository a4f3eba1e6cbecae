// Saves checkpoints of a few MB in a loop until killed: the kill -9 test's victim.
// usage: checkpoint_writer RUN_DIR
#include <ATen/ATen.h>

#include <iostream>

#include "clipper/checkpoint/checkpoint.hpp"
#include "clipper/dist/process_group.hpp"
#include "test_parts.hpp"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  clipper::checkpoint::Manager m(argv[1], {/*keep_last=*/3},
                                 std::make_shared<clipper::dist::ProcessGroup>());
  clipper::test::HeldParts p;
  for (std::int64_t step = 1;; ++step) {
    p.model.held.tensors = {{"w", at::full({512, 1024}, static_cast<float>(step))}};
    p.optimizer.held.tensors = {{"w.exp_avg", at::full({512, 1024}, static_cast<float>(-step))}};
    p.trainer.held.json = {{"step", step}};
    p.loader.held.json = {{"position", step * 10}};
    p.rng.held.tensors = {{"rng", at::arange(16, at::kByte)}};
    m.save(step, p.parts(), "model:\n  name: tiny-vit\n");
    std::cout << step << std::endl;
  }
}
