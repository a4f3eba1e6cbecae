// Full sharding's parameter units (dist/param_units.hpp) in one process: which unit a parameter
// belongs to, the layout, and the on-demand gather (values, gradients, at most max_gathered units
// whole at once, a released parameter holds no data).
#include "clipper/dist/param_units.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "clipper/dist/process_group.hpp"

using namespace clipper::dist;

TEST(ParamUnits, UnitsAreBlocksTowersAndTheRest) {
  const std::vector<std::string> names = {"positional_embedding",
                                          "text_projection",
                                          "transformer.resblocks.0.attn.in_proj_weight",
                                          "transformer.resblocks.0.mlp.c_fc.weight",
                                          "transformer.resblocks.1.ln_1.weight",
                                          "visual.conv1.weight",
                                          "visual.transformer.resblocks.11.attn.out_proj.weight",
                                          "visual.layer2.0.conv1.weight",
                                          "visual.trunk.blocks.3.mlp.layers.0.weight",
                                          "text.transformer.resblocks.2.ln_2.bias",
                                          "logit_scale"};
  const std::vector<std::string> want = {"",
                                         "",
                                         "transformer.resblocks.0",
                                         "transformer.resblocks.0",
                                         "transformer.resblocks.1",
                                         "visual",
                                         "visual.transformer.resblocks.11",
                                         "visual.layer2.0",
                                         "visual.trunk.blocks.3",
                                         "text.transformer.resblocks.2",
                                         "logit"};
  EXPECT_EQ(unit_names(names), want);
}

namespace {

struct Model {
  std::vector<at::Tensor> params;
  std::vector<std::string> names = {"embed",      "blocks.0.w", "blocks.0.b", "blocks.1.w",
                                    "blocks.1.b", "blocks.2.w", "head"};
  explicit Model(at::ScalarType dtype = at::kDouble) {
    at::manual_seed(3);
    for (std::int64_t n : {5, 12, 3, 12, 3, 12, 4})
      params.push_back(at::randn({n}, dtype).requires_grad_(true));
  }
};

std::shared_ptr<ProcessGroup> borrowed(ProcessGroup& pg) {
  return std::shared_ptr<ProcessGroup>(std::shared_ptr<void>(), &pg);
}

}  // namespace

TEST(ParamUnits, LayoutIsOneBucketPerUnitLastFirstPaddedToTheWorld) {
  Model m;
  const auto layout = unit_layout(m.params, m.names, 4);
  ASSERT_EQ(layout.buckets.size(), 4u);  // blocks.2, blocks.1, blocks.0, the rest
  EXPECT_EQ(layout.buckets[0].params, std::vector<std::size_t>({5}));
  EXPECT_EQ(layout.buckets[1].params, std::vector<std::size_t>({4, 3}));
  EXPECT_EQ(layout.buckets[3].params, std::vector<std::size_t>({6, 0}));
  EXPECT_EQ(layout.buckets[1].numel, 15);
  EXPECT_EQ(layout.buckets[1].padded, 16);
}

TEST(ParamUnits, OperationsGatherReleasedUnitsOnDemandAtMostTwoAtOnce) {
  Model m;
  std::vector<at::Tensor> before;
  for (const auto& p : m.params) before.push_back(p.detach().clone());
  ProcessGroup one;  // one rank: the gather is a copy of the shard
  ParamUnits units(m.params, m.names, borrowed(one));
  for (std::size_t i = 0; i < m.params.size(); ++i) EXPECT_TRUE(at::equal(m.params[i], before[i]));
  const std::int64_t whole = units.whole_bytes();
  units.release();
  EXPECT_EQ(m.params[1].storage().nbytes(), 0u);  // released: no data, the shape kept
  EXPECT_EQ(m.params[1].numel(), 12);
  at::Tensor loss = at::zeros({}, at::kDouble);
  {
    ParamUnits::OnDemand scope(units);
    for (const auto& p : m.params) loss = loss + (p * p).sum();
    loss.backward();  // (2 p) needs every parameter again
  }
  double expect = 0;
  for (const auto& p : before) expect += (p * p).sum().item<double>();
  EXPECT_DOUBLE_EQ(loss.item<double>(), expect);
  for (std::size_t i = 0; i < m.params.size(); ++i)
    EXPECT_TRUE(at::allclose(m.params[i].grad(), 2 * before[i], 0, 0)) << m.names[i];
  // Shards (the whole model on one rank) plus at most two units whole at once.
  EXPECT_LT(units.peak_bytes(), 2 * whole);
  EXPECT_GT(units.gathers(), 4);  // the backward gathered units again
  units.shards()[0].add_(1.0);    // blocks.2 updated in its shard ...
  units.gather_all();             // ... reaches the parameter
  EXPECT_TRUE(at::equal(m.params[5], before[5] + 1.0));
  EXPECT_TRUE(at::equal(m.params[0], before[0]));
}

// A second step pass prefetches (the units in the order the first one used them), and a bf16
// gather computes with rounded weights but never writes them back: the shards stay exact.
TEST(ParamUnits, PrefetchFollowsTheLastPassAndBf16GathersLeaveTheShardsExact) {
  Model m(at::kFloat);
  std::vector<at::Tensor> before;
  for (const auto& p : m.params) before.push_back(p.detach().clone());
  ProcessGroup one;
  ParamUnits units(m.params, m.names, borrowed(one), {2, /*prefetch=*/true, /*gather_bf16=*/true});
  units.release();
  const std::int64_t unit_bytes = 16 * 4;  // the largest unit: blocks.0 or blocks.1, 15 padded
  for (int pass = 0; pass < 2; ++pass) {
    ParamUnits::OnDemand scope(units);
    for (std::size_t i = 0; i < m.params.size(); ++i)
      EXPECT_TRUE(at::equal(m.params[i], before[i].to(at::kBFloat16).to(at::kFloat)))
          << m.names[i] << " pass " << pass;
    if (pass == 0) EXPECT_EQ(units.counters().prefetched, 0);
  }
  EXPECT_GE(units.counters().prefetched, 3);  // blocks.0, blocks.1, blocks.2 (and the rest)
  EXPECT_LE(units.peak_bytes(), units.whole_bytes() + 3 * unit_bytes);  // one shard = the model
  units.release();
  for (const auto& p : m.params) EXPECT_EQ(p.storage().nbytes(), 0u);
  units.gather_all();  // exact: outside a step pass
  for (std::size_t i = 0; i < m.params.size(); ++i)
    EXPECT_TRUE(at::equal(m.params[i], before[i])) << m.names[i];
}
