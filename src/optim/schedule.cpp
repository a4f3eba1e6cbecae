#include "clipper/optim/schedule.hpp"

#include <algorithm>
#include <cmath>

namespace clipper::optim {

double learning_rate(const config::OptimConfig& o, std::int64_t step, std::int64_t total_steps) {
  const double base = o.lr;
  const std::int64_t warmup = o.warmup_steps;
  if (step < warmup) return base * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (o.schedule == config::LrSchedule::constant) return base;
  if (o.schedule == config::LrSchedule::const_cooldown) {
    const std::int64_t start = total_steps - o.cooldown_steps;
    if (step < start) return base;
    const double e = static_cast<double>(step - start);
    const double es = static_cast<double>(std::max<std::int64_t>(1, total_steps - start));
    // OpenCLIP's polynomial cooldown: (1 - e / es)^power, linear for power 1.
    const double decay = std::pow(std::max(0.0, 1.0 - e / es), o.cooldown_power);
    return decay * (base - o.cooldown_end_lr) + o.cooldown_end_lr;
  }
  // cosine
  const double e = static_cast<double>(step - warmup);
  const double es = static_cast<double>(std::max<std::int64_t>(1, total_steps - warmup));
  return 0.5 * (1.0 + std::cos(M_PI * e / es)) * base;
}

}  // namespace clipper::optim
