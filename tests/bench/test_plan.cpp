// `clipper plan`: the ZeRO stages divide what they shard, and the bytes it predicts for a step
// are the bytes the process group is handed (counted by the group itself) in a real 2-rank step.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "clipper/bench/plan.hpp"
#include "clipper/model/flops.hpp"
#include "test_util.hpp"

using namespace clipper;

TEST(Plan, ZeroStagesShardOptimizerStateThenGradientsThenParameters) {
  const auto spec = model::load_model_spec("ViT-B-16");
  const double p = static_cast<double>(model::parameter_count(spec));
  bench::PlanOptions o;
  o.world = 8;
  o.bf16 = false;
  const auto z0 = bench::make_plan(spec, o);
  EXPECT_DOUBLE_EQ(z0.parameters, 4 * p);
  EXPECT_DOUBLE_EQ(z0.gradients, 8 * p);  // the full gradients and their flat buckets
  EXPECT_DOUBLE_EQ(z0.optimizer, 8 * p);
  o.zero = 1;
  const auto z1 = bench::make_plan(spec, o);
  EXPECT_DOUBLE_EQ(z1.optimizer, 8 * p / 8);
  EXPECT_DOUBLE_EQ(z1.gradients, 8 * p + 4 * p / 8);
  o.zero = 2;
  const auto z2 = bench::make_plan(spec, o);
  const double embedding = 4.0 * 49408 * 512;  // the largest parameter, above bucket_mb
  EXPECT_DOUBLE_EQ(z2.gradients, 4 * p / 8 + 3 * embedding);
  EXPECT_DOUBLE_EQ(z2.parameters, 4 * p);
  EXPECT_DOUBLE_EQ(z2.activations, z0.activations);
  // Full sharding: the shards and the two largest units (ViT-B-16's text embeddings, 25.3 M
  // parameters, and a 7.1 M image block), three with prefetch.
  o.zero = 3;
  const auto z3 = bench::make_plan(spec, o);
  EXPECT_NEAR(z3.parameters, 4 * p / 8 + 4 * (25.6e6 + 7.08e6), 4 * 0.1e6);
  EXPECT_NEAR(z3.gradients, 4 * p / 8 + 4 * (2 * 25.6e6 + 7.08e6), 4 * 0.1e6);
  o.prefetch = true;  // and a text block (12 x 512^2)
  EXPECT_DOUBLE_EQ(bench::make_plan(spec, o).parameters, z3.parameters + 4.0 * 12 * 512 * 512);
  o.zero = 2;
  // Checkpointing keeps one fp32 tensor per block instead of every activation.
  o.grad_checkpointing = true;
  EXPECT_LT(bench::make_plan(spec, o).activations, z0.activations / 5);
  // Past one node the inter-node bandwidth decides.
  o.world = 64;
  const auto wide = bench::make_plan(spec, o);
  EXPECT_GT(wide.comm_seconds(), z2.comm_seconds() * 5);
}

// `clipper bench train` on 2 ranks with dist.zero = zero: the bytes per step the group counted.
double measured_payload(int zero, bool chunked = false) {
  clipper::test::TempDir t;
  const std::string bench_json = t.file("bench.jsonl");
  const auto r = clipper::test::run(
      clipper::test::clipper_bin() + " launch --nproc-per-node 2 -- " +
      clipper::test::clipper_bin() +
      " bench train --model tiny-vit --batch 8 --device cpu --steps 2 --warmup 1 --zero " +
      std::to_string(zero) + (chunked ? " --chunked-loss" : "") + " --json " + bench_json);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(bench_json);
  std::string line;
  if (!std::getline(in, line)) return -1;
  return nlohmann::json::parse(line).at("payload_bytes_per_step").get<double>();
}

double predicted_payload(int zero, bool chunked = false) {
  bench::PlanOptions o;
  o.world = 2;
  o.batch = 8;
  o.bf16 = false;
  o.gloo = true;  // measured on the CPU
  o.zero = zero;
  o.chunked = chunked;
  double predicted = 0;
  for (const auto& c : bench::make_plan(model::load_model_spec("tiny-vit"), o).collectives)
    predicted += c.payload_bytes;
  return predicted;
}

TEST(Plan, PredictedPayloadEqualsWhatTheProcessGroupCountsOnTwoRanks) {
  EXPECT_DOUBLE_EQ(measured_payload(0), predicted_payload(0));
}

// With ZeRO the reduce-scatter is handed whole buckets and the all-gather one shard; the plan
// leaves out each bucket's padding to a multiple of W (at most W - 1 = 1 fp32 element a bucket,
// counted once whole and once as a shard).
TEST(Plan, PredictedPayloadEqualsWhatTheProcessGroupCountsOnTwoRanksZero1And2) {
  for (const int zero : {1, 2}) {
    const double measured = measured_payload(zero), predicted = predicted_payload(zero);
    EXPECT_GE(measured, predicted) << "zero " << zero;
    EXPECT_LE(measured - predicted, 16 * 4.0 * 1.5) << "zero " << zero;
  }
}

// loss.chunked: the features travel point to point around the ring instead of in an all-gather.
TEST(Plan, PredictedPayloadEqualsWhatTheProcessGroupCountsOnTwoRanksChunkedLoss) {
  EXPECT_DOUBLE_EQ(measured_payload(0, true), predicted_payload(0, true));
}

// The chunked loss's memory does not grow with the world size; the local loss's does.
TEST(Plan, ChunkedLossMemoryIsTheSameForAnyWorldSize) {
  const auto spec = model::load_model_spec("ViT-B-16");
  bench::PlanOptions o;
  o.batch = 256;
  o.chunked = true;
  o.world = 8;
  const double at8 = bench::make_plan(spec, o).loss;
  o.world = 512;
  EXPECT_DOUBLE_EQ(bench::make_plan(spec, o).loss, at8);
  o.chunked = false;
  EXPECT_GT(bench::make_plan(spec, o).loss, 20 * at8);
}
