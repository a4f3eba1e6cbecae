// TrainStep on CPU: NaN steps are skipped with state untouched; contrastive-correct accumulation
// equals the step on the whole batch; the loss falls on a repeated batch.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>

#include "clipper/config/config.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/model/model_spec.hpp"
#include "clipper/train/step.hpp"

using namespace clipper;

namespace {

struct Fixture {
  model::ModelSpec spec = model::load_model_spec("tiny-fmnist-vit");
  std::shared_ptr<dist::ProcessGroup> pg = std::make_shared<dist::ProcessGroup>();
  config::Config cfg;
  Fixture() {
    cfg.optim.lr = 1e-3;
    cfg.dist.overlap_grad_reduce = false;
  }
  train::MicroBatch batch(int n, int seed) const {
    at::manual_seed(seed);
    train::MicroBatch b;
    b.images = at::randint(0, 256, {n, spec.image_size, spec.image_size, 3}, at::kByte);
    b.tokens = at::randint(1, 5000, {n, spec.context_length}, at::kLong);
    b.tokens.select(1, 6).fill_(spec.vocab_size - 1);
    return b;
  }
};

std::vector<at::Tensor> snapshot(const std::vector<std::pair<std::string, at::Tensor>>& named) {
  std::vector<at::Tensor> out;
  for (const auto& [n, t] : named) out.push_back(t.detach().clone());
  return out;
}

}  // namespace

TEST(TrainStep, NonFiniteStepIsSkippedAndChangesNothing) {
  Fixture f;
  train::TrainStep step(model::create_model(f.spec, 1), f.pg, f.cfg, at::kCPU, {});
  ASSERT_FALSE(step.run({f.batch(8, 1)}, 1e-3).skipped);
  const auto params = snapshot(step.model()->state_dict());
  const auto opt = snapshot(step.optimizer().state());
  auto bad = f.batch(8, 2);
  bad.images = step.prepare_images(bad.images);
  bad.images[3].fill_(std::nan(""));  // a NaN image poisons the loss
  const auto r = step.run({bad}, 1e-3);
  EXPECT_TRUE(r.skipped);
  EXPECT_TRUE(std::isnan(r.loss));
  const auto p2 = step.model()->state_dict();
  for (std::size_t i = 0; i < params.size(); ++i)
    EXPECT_TRUE(at::equal(params[i], p2[i].second)) << p2[i].first;
  const auto o2 = step.optimizer().state();
  for (std::size_t i = 0; i < opt.size(); ++i)
    EXPECT_TRUE(at::equal(opt[i], o2[i].second)) << o2[i].first;
  EXPECT_FALSE(step.run({f.batch(8, 3)}, 1e-3).skipped);  // training goes on
}

TEST(TrainStep, AccumulationEqualsTheWholeBatch) {
  Fixture f;
  auto a = f.batch(8, 11), b = f.batch(8, 12);
  train::MicroBatch whole{at::cat({a.images, b.images}), at::cat({a.tokens, b.tokens})};
  train::TrainStep one(model::create_model(f.spec, 5), f.pg, f.cfg, at::kCPU, {});
  train::TrainStep acc(model::create_model(f.spec, 5), f.pg, f.cfg, at::kCPU, {});
  const auto r1 = one.run({whole}, 1e-3);
  const auto r2 = acc.run({a, b}, 1e-3);
  EXPECT_NEAR(r1.loss, r2.loss, 1e-5);
  EXPECT_NEAR(r1.grad_norm, r2.grad_norm, 1e-4 * r1.grad_norm);
  // The gradients (still held after the step) agree to rounding, tensor by tensor.
  const auto n1 = one.model()->named_parameters(), n2 = acc.model()->named_parameters();
  for (std::size_t i = 0; i < n1.size(); ++i) {
    const auto g1 = n1[i].value().grad(), g2 = n2[i].value().grad();
    ASSERT_TRUE(g1.defined() && g2.defined()) << n1[i].key();
    const double scale = g1.abs().max().item<double>();
    EXPECT_LE((g1 - g2).abs().max().item<double>(), 1e-5 * scale + 1e-12) << n1[i].key();
  }
  // The parameters after one AdamW step: its first update is lr * g / (|g| + eps) per coordinate,
  // so a coordinate whose gradient is within rounding of zero can move by a visible fraction of
  // lr (1e-3) in one run and not the other; 5 % of lr bounds that.
  const auto p1 = one.model()->state_dict(), p2 = acc.model()->state_dict();
  double worst = 0;
  std::string where;
  for (std::size_t i = 0; i < p1.size(); ++i) {
    const double d = (p1[i].second - p2[i].second).abs().max().item<double>();
    if (d > worst) {
      worst = d;
      where = p1[i].first;
    }
  }
  EXPECT_LT(worst, 5e-5) << where;
}

TEST(TrainStep, LossFallsOnARepeatedBatch) {
  Fixture f;
  train::TrainStep step(model::create_model(f.spec, 2), f.pg, f.cfg, at::kCPU, {});
  const auto b = f.batch(16, 4);
  const double first = step.run({b}, 1e-3).loss;
  double last = first;
  for (int i = 0; i < 10; ++i) last = step.run({b}, 1e-3).loss;
  EXPECT_LT(last, first * 0.7);
}
