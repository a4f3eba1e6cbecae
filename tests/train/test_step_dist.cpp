// TrainStep on 2 ranks (label dist): BatchNorm running statistics stay rank 0's on every rank, as
// DDP's broadcast_buffers makes them, although each rank normalizes its own batches.
//
// The test starts itself again as the ranks: `clipper launch --nproc-per-node 2 -- <this test
// binary> --gtest_filter=<this test>` with CLIPPER_STEP_DIST_OUT set, which runs the rank's part.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "clipper/config/config.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/dist/world.hpp"
#include "clipper/model/model_spec.hpp"
#include "clipper/train/step.hpp"
#include "test_util.hpp"

using namespace clipper;

namespace {

std::string self_path() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One rank: 3 steps of tiny-rn on this rank's own batches, then every buffer is compared with
// rank 0's. The verdict goes to OUT/rank<R>.log.
void run_rank(const std::string& out) {
  const config::DistConfig dc;
  const auto world = dist::discover_world(dc);
  at::set_num_threads(1);
  auto pg = dist::ProcessGroup::create(world, dc, /*use_cuda=*/false);
  const auto spec = model::load_model_spec("tiny-rn");
  train::StepConfig cfg;
  cfg.overlap_grad_reduce = false;
  train::TrainStep step(model::create_model(spec, 100 + pg->rank()), pg, cfg, at::kCPU, {});
  for (int s = 0; s < 3; ++s) {
    at::manual_seed(1000 * pg->rank() + s);  // each rank its own images
    train::MicroBatch b;
    b.images = at::randint(0, 256, {4, spec.image_size, spec.image_size, 3}, at::kByte);
    b.tokens = at::randint(1, 5000, {4, spec.context_length}, at::kLong);
    b.tokens.select(1, 6).fill_(spec.vocab_size - 1);
    ASSERT_FALSE(step.run({b}, 1e-3).skipped);
  }
  std::ostringstream verdict;
  int differ = 0, buffers = 0;
  for (const auto& item : step.model()->named_buffers()) {
    ++buffers;
    const auto mine = item.value().to(at::kDouble).reshape({1, -1});
    const auto all = pg->all_gather(mine.contiguous(), "buffer " + item.key());
    if (!at::equal(all[0], all[1])) {
      ++differ;
      verdict << " " << item.key();
    }
  }
  const auto& rm = step.model()->visual_resnet->bn1->running_mean;
  const bool moved = rm.abs().sum().item<double>() > 0;  // the statistics did update
  std::ofstream(out + "/rank" + std::to_string(pg->rank()) + ".log")
      << (differ == 0 && moved && buffers > 0 ? "OK" : "FAIL") << " buffers " << buffers
      << " differ " << differ << (moved ? "" : " (running_mean never moved)") << verdict.str()
      << "\n";
  EXPECT_EQ(differ, 0) << verdict.str();
  EXPECT_TRUE(moved);
}

}  // namespace

TEST(TrainStepDist, BatchNormStatisticsAreRank0sOnEveryRank) {
  if (const char* out = std::getenv("CLIPPER_STEP_DIST_OUT")) return run_rank(out);
  test::TempDir dir;
  const auto r = test::run("CLIPPER_STEP_DIST_OUT=" + dir.path().string() + " " +
                           test::clipper_bin() + " launch --nproc-per-node 2 -- " + self_path() +
                           " --gtest_filter=TrainStepDist.BatchNormStatisticsAreRank0sOnEveryRank");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (int rank = 0; rank < 2; ++rank) {
    const auto log = slurp(dir.file("rank" + std::to_string(rank) + ".log"));
    EXPECT_EQ(log.rfind("OK", 0), 0u) << "rank " << rank << ": " << log << r.output;
  }
}
