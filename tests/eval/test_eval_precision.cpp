// Evaluation in the run's precision: under an EvalPrecision asking for bf16 the towers run under
// bf16 autocast and everything around them stays fp32.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>

#include "clipper/eval/eval.hpp"
#include "clipper/eval/precision.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/tokenizer/tokenizer.hpp"

using namespace clipper;

TEST(EvalPrecision, Bf16RunsOnlyTheTowersUnderAutocast) {
  at::NoGradGuard no_grad;
  const auto spec = model::load_model_spec("tiny-vit");
  auto m = model::create_model(spec, 3);
  const auto tok = tokenizer::make_tokenizer("clip", spec.context_length);
  const eval::ZeroShotClasses classes{{"cat", "dog", "car"}, {"a photo of a {}.", "{}"}};
  const auto fp32 = eval::zeroshot_classifier(*m, *tok, classes, at::kCPU);
  at::Tensor bf16;
  {
    const eval::EvalPrecision precision(true, c10::DeviceType::CPU);
    EXPECT_TRUE(eval::eval_in_bf16());
    EXPECT_FALSE(at::autocast::is_autocast_enabled(at::kCPU));  // only inside a tower call
    bf16 = eval::zeroshot_classifier(*m, *tok, classes, at::kCPU);
    EXPECT_FALSE(at::autocast::is_autocast_enabled(at::kCPU));
  }
  EXPECT_FALSE(eval::eval_in_bf16());
  EXPECT_EQ(bf16.scalar_type(), at::kFloat);
  const double diff = (bf16 - fp32).abs().max().item<double>();
  EXPECT_GT(diff, 0.0) << "the text tower did not run in bf16";
  EXPECT_LT(diff, 0.05) << "bf16 features of unit rows";
  // Without the scope, a tower call is fp32 again.
  EXPECT_TRUE(at::equal(eval::zeroshot_classifier(*m, *tok, classes, at::kCPU), fp32));
}
