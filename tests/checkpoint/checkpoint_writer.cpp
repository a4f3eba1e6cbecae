// Saves checkpoints of a few MB in a loop until killed: the kill -9 test's victim.
// usage: checkpoint_writer RUN_DIR
#include <ATen/ATen.h>

#include <iostream>

#include "clipper/checkpoint/checkpoint.hpp"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  clipper::checkpoint::Manager m(argv[1], 0, 1, /*keep_last=*/3, [] {});
  for (std::int64_t step = 1;; ++step) {
    clipper::checkpoint::State s;
    s.model = {{"w", at::full({512, 1024}, static_cast<float>(step))}};
    s.optimizer = {{"w.exp_avg", at::full({512, 1024}, static_cast<float>(-step))}};
    s.trainer = {{"step", step}};
    s.config_yaml = "model:\n  name: tiny-vit\n";
    s.rank_json = {{"position", step * 10}};
    s.rank_tensors = {{"rng", at::arange(16, at::kByte)}};
    m.save(step, s);
    std::cout << step << std::endl;
  }
}
