// A reproducible random micro-batch for a model spec: uint8 NHWC images and tokens with the
// end-of-text id at position 6, so the text tower pools a fixed token. Shared by the step tests.
#pragma once

#include <ATen/ATen.h>

#include "clipper/model/model_spec.hpp"
#include "clipper/train/step.hpp"

namespace clipper::test {

inline train::MicroBatch random_batch(const model::ModelSpec& spec, int n, int seed) {
  at::manual_seed(seed);
  train::MicroBatch b;
  b.images = at::randint(0, 256, {n, spec.image_size, spec.image_size, 3}, at::kByte);
  b.tokens = at::randint(1, 5000, {n, spec.context_length}, at::kLong);
  b.tokens.select(1, 6).fill_(spec.vocab_size - 1);
  return b;
}

}  // namespace clipper::test
