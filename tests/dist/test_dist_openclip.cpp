// The distributed CLIP loss against open_clip's ClipLoss on 2 ranks: the loss and each rank's own
// gradients (features and logit scale, before any reduction) for all four combinations of
// local_loss and gather_with_grad. clipper's ranks run under `clipper launch` (dist_worker
// clip_grads), open_clip's under torchrun; both read the same float64 features.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include "clipper/dist/launch.hpp"
#include "test_util.hpp"

namespace {

using clipper::test::TempDir;

constexpr int kWorld = 2;
constexpr long kBatch = 3, kDim = 5;

std::vector<double> read_doubles(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return {};
  std::vector<double> v(static_cast<std::size_t>(in.tellg()) / sizeof(double));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * 8));
  return v;
}

// image [W*B, D] and text [W*B, D], rows L2-normalized, then the (exponentiated) logit scale.
void write_features(const std::string& path) {
  std::mt19937_64 gen(20261201);
  std::normal_distribution<double> normal;
  std::vector<double> v;
  for (long row = 0; row < 2 * kWorld * kBatch; ++row) {
    std::vector<double> x(kDim);
    double norm = 0;
    for (auto& e : x) norm += (e = normal(gen)) * e;
    for (auto e : x) v.push_back(e / std::sqrt(norm));
  }
  v.push_back(14.3);
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 8));
}

}  // namespace

TEST(DistLossOpenClip, GradientsMatchOpenClipForEveryGatherMode2Ranks) {
  TempDir dir;
  const std::string in = dir.file("in.bin"), out = dir.path().string();
  write_features(in);
  const std::string sizes = std::to_string(kBatch) + " " + std::to_string(kDim);
  const auto ours = clipper::test::run(clipper::test::clipper_bin() + " launch --nproc-per-node " +
                                       std::to_string(kWorld) + " -- " + CLIPPER_DIST_WORKER +
                                       " clip_grads in=" + in + " batch=" + std::to_string(kBatch) +
                                       " dim=" + std::to_string(kDim) + " out=" + out);
  ASSERT_EQ(ours.exit_code, 0) << ours.output;
  const std::string torchrun = CLIPPER_TORCHRUN;
  ASSERT_TRUE(std::filesystem::exists(torchrun)) << torchrun;
  const auto theirs = clipper::test::run(
      "OMP_NUM_THREADS=1 " + torchrun + " --nproc-per-node " + std::to_string(kWorld) +
      " --master-port " + std::to_string(clipper::dist::find_free_port()) + " " +
      clipper::test::source_path("tests/dist/openclip_dist_loss.py") + " " + in + " " + out + " " +
      sizes);
  ASSERT_EQ(theirs.exit_code, 0) << theirs.output;

  const std::size_t n = 1 + 2 * kBatch * kDim + 1;
  for (const char* mode : {"l0g0", "l0g1", "l1g0", "l1g1"})
    for (int r = 0; r < kWorld; ++r) {
      const std::string tail = std::string(mode) + "_rank" + std::to_string(r) + ".bin";
      const auto a = read_doubles(dir.file("clipper_" + tail));
      const auto b = read_doubles(dir.file("openclip_" + tail));
      ASSERT_EQ(a.size(), n) << tail;
      ASSERT_EQ(b.size(), n) << tail;
      double worst = 0;
      std::size_t where = 0;
      for (std::size_t i = 0; i < n; ++i)
        if (std::abs(a[i] - b[i]) > worst) {
          worst = std::abs(a[i] - b[i]);
          where = i;
        }
      // Index 0: the loss, then d image, d text, and last d scale.
      EXPECT_LT(worst, 1e-12) << mode << " rank " << r << ": value " << where << " is " << a[where]
                              << ", open_clip's " << b[where];
    }
}
