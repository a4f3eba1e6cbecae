// Uses the installed clipper as a C++ user would: a config with overrides, a Session on tiny-vit
// and one real training step through clipper::clipper.
#include <clipper/clipper.hpp>

#include <ATen/ATen.h>

#include <cmath>
#include <iostream>

int main() {
  auto cfg =
      clipper::config::load({}, {"model.name=tiny-vit", "optim.lr=0.25", "train.device=cpu"});
  auto s = clipper::session::open_session(cfg);
  const auto step_cfg = clipper::train::StepConfig::from(cfg);
  clipper::train::TrainStep step(s.model, s.pg, step_cfg, s.device, {});
  const auto& spec = s.spec;
  clipper::train::MicroBatch b;
  b.images = at::randint(0, 256, {4, spec.image_size, spec.image_size, 3}, at::kByte);
  b.tokens = at::randint(1, spec.vocab_size - 1, {4, spec.context_length}, at::kLong);
  b.tokens.select(1, spec.context_length - 1).fill_(spec.vocab_size - 1);
  const auto r = step.run({b}, 1e-4);
  std::cout << "clipper " << clipper::core::version() << " lr=" << cfg.optim.lr
            << " model=" << cfg.model.name << " step loss=" << r.loss << "\n";
  return r.read && std::isfinite(r.loss) && !r.skipped ? 0 : 1;
}
