#pragma once
// Learning-rate schedules as OpenCLIP defines them: linear warmup, then cosine, constant, or
// constant with a final cooldown (linear or polynomial, to optim.cooldown_end_lr).
#include <cstdint>

#include "clipper/config/config.hpp"

namespace clipper::optim {

// Learning rate for optimizer step `step` (0-based) of `total_steps`.
double learning_rate(const config::OptimConfig& optim, std::int64_t step, std::int64_t total_steps);

}  // namespace clipper::optim
