// TrainStep on CPU: NaN steps are skipped with state untouched; contrastive-correct accumulation
// equals the step on the whole batch; the loss falls on a repeated batch.
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <map>

#include "clipper/config/config.hpp"
#include "clipper/core/error.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/model/model_spec.hpp"
#include "clipper/optim/param_groups.hpp"
#include "clipper/train/step.hpp"
#include "random_batch.hpp"

using namespace clipper;

namespace {

struct Fixture {
  model::ModelSpec spec = model::load_model_spec("tiny-fmnist-vit");
  std::shared_ptr<dist::ProcessGroup> pg = std::make_shared<dist::ProcessGroup>();
  train::StepConfig cfg;
  Fixture() {
    cfg.optim.lr = 1e-3;
    cfg.overlap_grad_reduce = false;
  }
  train::MicroBatch batch(int n, int seed) const { return test::random_batch(spec, n, seed); }
};

std::vector<at::Tensor> snapshot(const std::vector<std::pair<std::string, at::Tensor>>& named) {
  std::vector<at::Tensor> out;
  for (const auto& [n, t] : named) out.push_back(t.detach().clone());
  return out;
}

}  // namespace

// optim.no_decay auto: open_clip main's rule with layer decay, except when continuing an
// OpenCLIP 3.3.0 run (checkpoint.resume_openclip), which keeps the rule its main.py split with.
TEST(StepConfig, NoDecayAutoKeepsTheResumedOpenClipRunsRule) {
  config::Config cfg;
  cfg.optim.image_layer_decay = 0.75;
  EXPECT_EQ(optim::no_decay_rule(train::StepConfig::from(cfg).optim), config::NoDecay::modern);
  cfg.checkpoint.resume_openclip = "epoch_3.pt";
  EXPECT_EQ(optim::no_decay_rule(train::StepConfig::from(cfg).optim), config::NoDecay::openclip3);
  cfg.optim.no_decay = config::NoDecay::modern;  // set: the run's choice holds
  EXPECT_EQ(optim::no_decay_rule(train::StepConfig::from(cfg).optim), config::NoDecay::modern);
}

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

// A skipped step must not leave its forward's BatchNorm statistics behind: with a NaN image the
// running means and variances would turn NaN (and be broadcast to every rank), poisoning every
// later evaluation even though the parameters were kept.
TEST(TrainStep, NonFiniteStepKeepsBatchNormStatistics) {
  Fixture f;
  f.spec = model::load_model_spec("tiny-rn");
  train::TrainStep step(model::create_model(f.spec, 1), f.pg, f.cfg, at::kCPU, {});
  ASSERT_FALSE(step.run({f.batch(8, 1)}, 1e-3).skipped);
  std::vector<std::pair<std::string, at::Tensor>> before;
  for (const auto& b : step.model()->named_buffers())
    before.emplace_back(b.key(), b.value().clone());
  ASSERT_FALSE(before.empty());
  auto bad = f.batch(8, 2);
  bad.images = step.prepare_images(bad.images);
  bad.images[3].fill_(std::nan(""));
  ASSERT_TRUE(step.run({bad}, 1e-3).skipped);
  const auto after = step.model()->named_buffers();
  for (const auto& [name, t] : before) EXPECT_TRUE(at::equal(t, after[name])) << name;
  const auto r = step.run({f.batch(8, 3)}, 1e-3);  // a good step still updates them
  EXPECT_FALSE(r.skipped);
  EXPECT_TRUE(std::isfinite(r.loss));
  EXPECT_FALSE(
      at::equal(before.front().second, step.model()->named_buffers()[before.front().first]))
      << before.front().first;
}

// Reading back every 4 steps instead of every step: the same parameters (the NaN skip is decided
// on the device), and each read reports its window: steps, skipped steps, the good steps' losses,
// the run of bad steps (which carries across windows).
TEST(TrainStep, DeferredReadBackSkipsOnTheDeviceAndReportsTheWindow) {
  Fixture f;
  train::StepOptions every4;
  every4.read_every = 4;
  train::TrainStep sync(model::create_model(f.spec, 7), f.pg, f.cfg, at::kCPU, {});
  train::TrainStep lazy(model::create_model(f.spec, 7), f.pg, f.cfg, at::kCPU, every4);
  // Steps 3, 7, 8 and 9 (1-based) get a NaN image.
  auto batch = [&](train::TrainStep& s, int i) {
    auto b = f.batch(8, 100 + i);
    if (i == 2 || (i >= 6 && i <= 8)) {
      b.images = s.prepare_images(b.images);
      b.images[1].fill_(std::nan(""));
    }
    return b;
  };
  std::vector<train::StepResult> want, got;
  for (int i = 0; i < 10; ++i) {
    want.push_back(sync.run({batch(sync, i)}, 1e-3));
    got.push_back(lazy.run({batch(lazy, i)}, 1e-3));
    ASSERT_TRUE(want.back().read);
    EXPECT_EQ(got.back().read, (i + 1) % 4 == 0) << "step " << i + 1;
    if (!got.back().read) EXPECT_TRUE(std::isnan(got.back().loss));
  }
  const auto p1 = sync.model()->state_dict(), p2 = lazy.model()->state_dict();
  for (std::size_t i = 0; i < p1.size(); ++i)
    EXPECT_TRUE(at::equal(p1[i].second, p2[i].second)) << p1[i].first;
  const auto o1 = sync.optimizer().state(), o2 = lazy.optimizer().state();
  for (std::size_t i = 0; i < o1.size(); ++i)
    EXPECT_TRUE(at::equal(o1[i].second, o2[i].second)) << o1[i].first;
  // Window 1 (steps 1-4): step 3 bad. Window 2 (steps 5-8): 7 and 8 bad, a run of 2 at its end.
  const auto& w1 = got[3];
  EXPECT_EQ(w1.window_steps, 4);
  EXPECT_EQ(w1.window_skipped, 1);
  EXPECT_NEAR(w1.loss, (want[0].loss + want[1].loss + want[3].loss) / 3, 1e-9);
  EXPECT_DOUBLE_EQ(w1.last_loss, want[3].loss);
  EXPECT_EQ(w1.nan_in_row, 0);
  EXPECT_EQ(w1.max_nan_in_row, 1);
  EXPECT_FALSE(w1.skipped);
  const auto& w2 = got[7];
  EXPECT_EQ(w2.window_skipped, 2);
  EXPECT_EQ(w2.nan_in_row, 2);
  EXPECT_EQ(w2.max_nan_in_row, 2);
  EXPECT_TRUE(w2.skipped);
  EXPECT_DOUBLE_EQ(w2.last_loss, want[5].loss);
  EXPECT_TRUE(std::isnan(w2.grad_norm));  // step 8's
  // Steps 9 (bad) and 10 (good), read early: the run that went on from window 2 is its maximum.
  const auto w3 = lazy.read_back();
  EXPECT_EQ(w3.window_steps, 2);
  EXPECT_EQ(w3.window_skipped, 1);
  EXPECT_EQ(w3.max_nan_in_row, 3);
  EXPECT_EQ(w3.nan_in_row, 0);
  EXPECT_NEAR(w3.loss, want[9].loss, 1e-12);
  EXPECT_NEAR(w3.logit_scale, want[9].logit_scale, 1e-12);
  EXPECT_TRUE(sync.read_back().window_steps == 0);  // nothing since its last read
}

// The ResNet tower kept channels-last (the CUDA default; run here on CPU): the same step as NCHW.
TEST(TrainStep, ChannelsLastResNetMatchesNchw) {
  Fixture f;
  f.spec = model::load_model_spec("tiny-rn");
  train::StepOptions cl;
  cl.channels_last = true;
  train::TrainStep a(model::create_model(f.spec, 3), f.pg, f.cfg, at::kCPU, {});
  train::TrainStep b(model::create_model(f.spec, 3), f.pg, f.cfg, at::kCPU, cl);
  const auto w = b.model()->visual_resnet->named_parameters()["conv1.weight"];
  ASSERT_TRUE(w.is_contiguous(at::MemoryFormat::ChannelsLast));
  for (int i = 0; i < 2; ++i) {
    const auto batch = f.batch(8, 40 + i);
    const auto ra = a.run({batch}, 1e-3), rb = b.run({batch}, 1e-3);
    EXPECT_NEAR(ra.loss, rb.loss, 1e-4 * std::abs(ra.loss)) << "step " << i;
    EXPECT_NEAR(ra.grad_norm, rb.grad_norm, 1e-3 * ra.grad_norm) << "step " << i;
  }
  const auto pa = a.model()->state_dict(), pb = b.model()->state_dict();
  for (std::size_t i = 0; i < pa.size(); ++i)
    EXPECT_LT((pa[i].second - pb[i].second).abs().max().item<double>(), 1e-4) << pa[i].first;
}

// bf16 autocast on the CPU (train.precision: bf16): the loss is close to fp32's, not equal to it
// (autocast did run), and training makes progress.
TEST(TrainStep, Bf16AutocastOnCpu) {
  Fixture f;
  train::StepOptions bf;
  bf.bf16 = true;
  train::TrainStep fp(model::create_model(f.spec, 9), f.pg, f.cfg, at::kCPU, {});
  train::TrainStep lo(model::create_model(f.spec, 9), f.pg, f.cfg, at::kCPU, bf);
  const auto b = f.batch(16, 21);
  const double l32 = fp.run({b}, 1e-3).loss, l16 = lo.run({b}, 1e-3).loss;
  EXPECT_NEAR(l16, l32, 0.02 * l32);
  EXPECT_NE(l16, l32);
  EXPECT_FALSE(at::autocast::is_autocast_enabled(at::kCPU));  // the guard restored the state
  double last = l16;
  for (int i = 0; i < 10; ++i) last = lo.run({b}, 1e-3).loss;
  EXPECT_LT(last, 0.8 * l16);
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

// timm's ModelEmaV3 warmup with gamma 1: 1 - (1 + t)^-p, capped at the decay.
TEST(WeightEma, DecayWarmsUpAsTimmsModelEmaV3) {
  train::EmaOptions o{0.99, 0.0};
  EXPECT_DOUBLE_EQ(train::ema_decay_at(o, 0), 0.99);
  EXPECT_DOUBLE_EQ(train::ema_decay_at(o, 1000), 0.99);
  o.warmup_power = 0.75;
  EXPECT_DOUBLE_EQ(train::ema_decay_at(o, 0), 0.0);  // the first update copies the weights
  EXPECT_DOUBLE_EQ(train::ema_decay_at(o, 1), 1.0 - std::pow(2.0, -0.75));
  EXPECT_DOUBLE_EQ(train::ema_decay_at(o, 9), 1.0 - std::pow(10.0, -0.75));
  EXPECT_DOUBLE_EQ(train::ema_decay_at(o, 1000000), 0.99);
}

// After each optimizer step (an accumulated one counts once) the average follows the plain
// formula ema = d_t * ema + (1 - d_t) * w over the weights after that step, for every trainable
// parameter and floating buffer; frozen parameters are not tracked. A skipped step pulls it
// toward the unchanged weights (as timm's).
TEST(WeightEma, FollowsThePlainFormulaOverSteps) {
  for (const char* name : {"tiny-fmnist-vit", "tiny-rn"}) {
    Fixture f;
    f.spec = model::load_model_spec(name);
    const bool resnet = std::string(name) == "tiny-rn";
    f.cfg.ema = {0.8, 0.75};
    auto m = model::create_model(f.spec, 4);
    m->lock_text_tower(0);
    train::TrainStep step(m, f.pg, f.cfg, at::kCPU, {});
    ASSERT_NE(step.ema(), nullptr);
    std::map<std::string, at::Tensor> live;
    for (const auto& [n, t] : step.model()->state_dict()) live[n] = t;
    std::map<std::string, at::Tensor> want;
    for (const auto& [n, t] : step.ema()->named()) want[n] = t.clone().to(at::kDouble);
    EXPECT_EQ(want.count("text_projection"), 0u) << "frozen, not tracked";
    EXPECT_EQ(want.count("logit_scale"), 1u);
    if (resnet)
      EXPECT_EQ(want.count("visual.bn1.running_mean"), 1u) << "BatchNorm statistics are averaged";
    for (int i = 0; i < 5; ++i) {
      std::vector<train::MicroBatch> micro{f.batch(8, 60 + i)};
      if (i == 1) micro.push_back(f.batch(8, 70));  // accumulation: still one update
      if (i == 3) {
        micro[0].images = step.prepare_images(micro[0].images);
        micro[0].images[0].fill_(std::nan(""));
      }
      const auto r = step.run(micro, 1e-3);
      EXPECT_EQ(r.skipped, i == 3);
      EXPECT_EQ(step.ema()->updates(), i + 1);
      const double d = train::ema_decay_at(f.cfg.ema, i);
      for (auto& [n, e] : want) e = d * e + (1 - d) * live.at(n).to(at::kDouble);
    }
    for (const auto& [n, t] : step.ema()->named()) {
      const auto ref = want.at(n);
      const double tol = 1e-6 * (ref.abs().max().item<double>() + 1);
      EXPECT_LE((t.to(at::kDouble) - ref).abs().max().item<double>(), tol) << name << " " << n;
    }
    // The average differs from the weights, and swapping it in and back out is exact.
    const auto before = snapshot(step.model()->state_dict());
    const auto averaged = snapshot(step.ema()->named());
    {
      const train::EmaSwapped in(step.ema());
      std::map<std::string, at::Tensor> now;
      for (const auto& [n, t] : step.model()->state_dict()) now[n] = t;
      const auto named = step.ema()->named();
      std::size_t differ = 0;
      for (std::size_t i = 0; i < named.size(); ++i) {
        EXPECT_TRUE(at::equal(now.at(named[i].first), averaged[i])) << named[i].first;
        differ += !at::equal(named[i].second, averaged[i]);  // now the raw weights
      }
      EXPECT_GT(differ, named.size() / 2);
    }
    const auto after = step.model()->state_dict();
    for (std::size_t i = 0; i < after.size(); ++i)
      EXPECT_TRUE(at::equal(after[i].second, before[i])) << after[i].first;
    const auto named = step.ema()->named();
    for (std::size_t i = 0; i < named.size(); ++i)
      EXPECT_TRUE(at::equal(named[i].second, averaged[i])) << named[i].first;
  }
}

TEST(WeightEma, LoadRefusesAnotherSetOfTensors) {
  Fixture f;
  auto m = model::create_model(f.spec, 4);
  train::WeightEma ema(*m, {0.9, 0});
  auto saved = ema.named();
  saved.pop_back();
  try {
    ema.load(saved, {}, "ckpt/ema.safetensors");
    FAIL() << "a missing tensor loaded";
  } catch (const core::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("ckpt/ema.safetensors: the weight average does not"),
              std::string::npos)
        << e.what();
  }
}

// Distillation: the teacher stays frozen (no gradient, weights unchanged), the loss is the
// student's CLIP loss plus the teacher-logit term, and accumulating two micro-batches equals one
// step on their concatenation (the teacher's features of the whole batch are used).
TEST(TrainStep, DistillationKeepsTheTeacherFrozenAndAccumulates) {
  Fixture f;
  auto teacher_of = [&] {
    return model::create_model(model::load_model_spec("tiny-fmnist-vit"), 9);
  };
  auto a = f.batch(8, 31), b = f.batch(8, 32);
  train::MicroBatch whole{at::cat({a.images, b.images}), at::cat({a.tokens, b.tokens})};
  train::TrainStep plain(model::create_model(f.spec, 5), f.pg, f.cfg, at::kCPU, {});
  train::TrainStep one(model::create_model(f.spec, 5), f.pg, f.cfg, at::kCPU, {});
  train::TrainStep acc(model::create_model(f.spec, 5), f.pg, f.cfg, at::kCPU, {});
  auto teacher = teacher_of();
  const auto before = snapshot(teacher->state_dict());
  one.set_teacher(teacher);
  acc.set_teacher(teacher_of());
  const auto r0 = plain.run({whole}, 1e-3), r1 = one.run({whole}, 1e-3), r2 = acc.run({a, b}, 1e-3);
  EXPECT_GT(r1.loss, r0.loss + 0.5);  // + the distill term, about log(16) for random models
  EXPECT_NEAR(r1.loss, r2.loss, 1e-5);
  EXPECT_NEAR(r1.grad_norm, r2.grad_norm, 1e-4 * r1.grad_norm);
  const auto after = teacher->state_dict();
  for (std::size_t i = 0; i < after.size(); ++i) {
    EXPECT_TRUE(at::equal(after[i].second, before[i])) << after[i].first;
    EXPECT_FALSE(after[i].second.grad().defined()) << after[i].first;
  }
  EXPECT_FALSE(teacher->is_training());
}
