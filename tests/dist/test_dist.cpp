// Multi-process tests on CPU (Gloo): the worker (dist_worker.cpp) runs as 2 or 4 ranks started by
// `clipper launch`, by torchrun or by dist::run_ranks; each rank checks itself against one
// process on the whole batch and leaves its verdict in OUT/rank<R>.log.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "clipper/dist/launch.hpp"
#include "folder_tree.hpp"
#include "test_util.hpp"

namespace {

using clipper::test::TempDir;
using Clock = std::chrono::steady_clock;

std::string worker() {
  return CLIPPER_DIST_WORKER;
}

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string rank_log(const TempDir& dir, int rank) {
  return read(dir.file("rank" + std::to_string(rank) + ".log"));
}

// `clipper launch --nproc-per-node n -- dist_worker scenario args out=DIR`; every rank must say OK.
void expect_all_ok(int n, const std::string& scenario, const std::string& args) {
  TempDir dir;
  const auto r = clipper::test::run(clipper::test::clipper_bin() + " launch --nproc-per-node " +
                                    std::to_string(n) + " -- " + worker() + " " + scenario + " " +
                                    args + " out=" + dir.path().string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (int i = 0; i < n; ++i) {
    const auto log = rank_log(dir, i);
    EXPECT_EQ(log.rfind("OK " + scenario, 0), 0u) << "rank " << i << ": " << log << "\n"
                                                  << r.output;
  }
}

// --- losses equal the single-process loss on the concatenated batch ---------------------------
TEST(DistLoss, ClipLocalLossGatherWithGrad2Ranks) {
  expect_all_ok(2, "clip", "local=1 grad=1 dtype=f64");
}
TEST(DistLoss, ClipLocalLossGatherWithGrad4Ranks) {
  expect_all_ok(4, "clip", "local=1 grad=1 dtype=f64");
}
TEST(DistLoss, ClipFullGather4Ranks) {
  expect_all_ok(4, "clip", "local=0 grad=1 dtype=f64");
}
TEST(DistLoss, ClipGatherWithoutGradLossValue2Ranks) {
  expect_all_ok(2, "clip", "local=1 grad=0 dtype=f64");
}
TEST(DistLoss, ClipFloat32_2Ranks) {
  expect_all_ok(2, "clip", "local=1 grad=1 dtype=f32 batch=16 dim=32");
}
TEST(DistLoss, DistillLocalLoss2Ranks) {
  expect_all_ok(2, "distill", "local=1 grad=1 dtype=f64");
}
TEST(DistLoss, DistillFullGather4Ranks) {
  expect_all_ok(4, "distill", "local=0 grad=1 dtype=f64");
}
TEST(DistLoss, SigLipGather2Ranks) {
  expect_all_ok(2, "siglip", "exchange=gather dtype=f64");
}
TEST(DistLoss, SigLipGather4Ranks) {
  expect_all_ok(4, "siglip", "exchange=gather dtype=f64");
}
TEST(DistLoss, SigLipNeighbour4Ranks) {
  expect_all_ok(4, "siglip", "exchange=neighbour dtype=f64");
}
// Ranks with different numbers of pairs (NaFlex batches by token budget; issue 28): rank k holds
// 4 + k, the counts gathered first, the loss and gradients those of one process on all of them.
TEST(DistLoss, ClipUnequalBatches3Ranks) {
  expect_all_ok(3, "clip", "local=1 grad=1 dtype=f64 uneven=1");
}
TEST(DistLoss, SigLipUnequalBatches2Ranks) {
  expect_all_ok(2, "siglip", "dtype=f64 uneven=1");
}
// Without the unequal_batches switch, different batch sizes are a DistError naming each rank's
// size and the switch (they aborted inside Gloo's all-gather, exit 134).
TEST(DistLoss, UnequalBatchesWithoutTheSwitchAreRefused2Ranks) {
  for (const std::string kind : {"clip", "siglip"}) {
    TempDir dir;
    const auto r = clipper::test::run(clipper::test::clipper_bin() +
                                      " launch --nproc-per-node 2 -- " + worker() + " " + kind +
                                      " dtype=f64 uneven=1 switch=0 out=" + dir.path().string());
    EXPECT_EQ(r.exit_code, 0) << r.output;
    for (int i = 0; i < 2; ++i) {
      const auto log = rank_log(dir, i);
      EXPECT_EQ(log.rfind("OK " + kind + " refused", 0), 0u) << "rank " << i << ": " << log;
      EXPECT_NE(log.find("rank 0: 4, rank 1: 5"), std::string::npos) << log;
      EXPECT_NE(log.find("unequal_batches"), std::string::npos) << log;
    }
  }
}
TEST(DistLoss, SigLipNeighbour2Ranks) {
  expect_all_ok(2, "siglip", "exchange=neighbour dtype=f64");
}

// --- loss.chunked: equal to the unchunked forms on every rank (values and this rank's gradients,
// fp64 within 1e-12), and to one process on the whole batch ------------------------------------
TEST(DistLoss, ClipChunkedEqualsLocalLossGatherWithGrad2Ranks) {
  expect_all_ok(2, "chunked", "loss=clip local=1 grad=1 dtype=f64");
}
TEST(DistLoss, ClipChunkedEqualsLocalLossGatherWithGrad4Ranks) {
  expect_all_ok(4, "chunked", "loss=clip local=1 grad=1 dtype=f64");
}
TEST(DistLoss, ClipChunkedEqualsLocalLossGatherWithoutGrad4Ranks) {
  expect_all_ok(4, "chunked", "loss=clip local=1 grad=0 dtype=f64");
}
TEST(DistLoss, ClipChunkedFloat32_2Ranks) {
  expect_all_ok(2, "chunked", "loss=clip local=1 grad=1 dtype=f32 batch=16 dim=32 tol=2e-6");
}
TEST(DistLoss, SigLipChunkedEqualsNeighbour2Ranks) {
  expect_all_ok(2, "chunked", "loss=siglip exchange=neighbour dtype=f64");
}
TEST(DistLoss, SigLipChunkedEqualsGather4Ranks) {
  expect_all_ok(4, "chunked", "loss=siglip exchange=gather dtype=f64");
}
TEST(DistLoss, SigLipChunkedEqualsNeighbour4Ranks) {
  expect_all_ok(4, "chunked", "loss=siglip exchange=neighbour dtype=f64");
}
TEST(DistLoss, ClipChunkedEqualsOneProcess4Ranks) {
  expect_all_ok(4, "clip", "local=1 grad=1 chunked=1 dtype=f64");
}
TEST(DistLoss, SigLipChunkedEqualsOneProcess4Ranks) {
  expect_all_ok(4, "siglip", "chunked=1 dtype=f64");
}
TEST(DistTrain, ClipChunkedStepOverlapped2Ranks) {
  expect_all_ok(2, "train", "loss=clip chunked=1 overlap=1 bucket_mb=0.0001 steps=2");
}

// --- a training step on W ranks equals one rank with the W-times batch -------------------------
TEST(DistTrain, ClipStepOverlappedTinyBuckets2Ranks) {
  expect_all_ok(2, "train", "loss=clip overlap=1 bucket_mb=0.0001 steps=2");
}
TEST(DistTrain, ClipStepsWithAccumulationOverlapped2Ranks) {
  expect_all_ok(2, "train", "loss=clip overlap=1 bucket_mb=0.0001 steps=2 accum=3");
}
TEST(DistTrain, ClipStepSynchronous2Ranks) {
  expect_all_ok(2, "train", "loss=clip overlap=0 steps=2");
}
TEST(DistTrain, SigLipStepOverlapped4Ranks) {
  expect_all_ok(4, "train", "loss=siglip overlap=1 bucket_mb=0.0002 steps=2");
}
TEST(DistTrain, ClipFullGatherStep4Ranks) {
  expect_all_ok(4, "train", "loss=clip local=0 overlap=1 steps=1");
}

// --- ZeRO: 10 steps with dist.zero 1 and 2 equal dist.zero 0 (losses, norms, parameters and the
// optimizer moments of each rank's shard), with clipping that acts on some steps, a NaN step that
// every rank skips, two weight-decay groups and small buckets (shards cross parameters). fp64:
// 1e-12; fp32: 1e-5 (the norm relative to its size: the ZeRO norm is summed in fp64 from shard
// norms, the unsharded one in fp32).
const std::string kZeroArgs = "steps=10 clip=0.5 nan_step=4 bucket_mb=0.01 ";
TEST(DistZero, Stage1EqualsUnsharded2Ranks) {
  expect_all_ok(2, "zero", kZeroArgs + "zero=1");
}
TEST(DistZero, Stage2EqualsUnsharded2Ranks) {
  expect_all_ok(2, "zero", kZeroArgs + "zero=2");
}
TEST(DistZero, Stage1EqualsUnsharded4Ranks) {
  expect_all_ok(4, "zero", kZeroArgs + "zero=1");
}
TEST(DistZero, Stage2EqualsUnsharded4RanksLockedImageTower) {
  expect_all_ok(4, "zero", kZeroArgs + "zero=2 lock=image");
}
TEST(DistZero, Stage2EqualsUnshardedSynchronous2RanksLockedTextTower) {
  expect_all_ok(2, "zero", kZeroArgs + "zero=2 overlap=0 lock=text");
}
TEST(DistZero, Stage1EqualsUnshardedFloat32_2Ranks) {
  expect_all_ok(2, "zero", kZeroArgs + "zero=1 dtype=f32 tol=1e-5");
}
TEST(DistZero, Stage2EqualsUnshardedFloat32_4Ranks) {
  expect_all_ok(4, "zero", kZeroArgs + "zero=2 dtype=f32 tol=1e-5");
}
// Full sharding (dist.zero 3): parameters sharded per unit during the step, gathered on demand.
// The weight average (ema) is kept over each rank's shards (1/W of it per rank) and equals zero
// 0's; the exports (weights and average) stream unit by unit, never holding more than two units
// and one tensor beyond the shards (export=1, measured by a counting CPU allocator).
TEST(DistZero, Stage3EqualsUnsharded2Ranks) {
  expect_all_ok(2, "zero", kZeroArgs + "zero=3 peak_below=1 ema=0.9 export=1");
}
TEST(DistZero, Stage3EqualsUnsharded4RanksLockedTextTower) {
  expect_all_ok(4, "zero", kZeroArgs + "zero=3 lock=text");
}
TEST(DistZero, Stage3EqualsUnshardedResNet2Ranks) {  // with the BatchNorm buffers' average whole
  expect_all_ok(2, "zero", kZeroArgs + "zero=3 model=rn ema=0.9");
}
// With prefetch (dist.prefetch on: the unit that came next in the last step is gathered while the
// current one computes), where the order of use is least regular: accumulation's no-grad forward
// passes, and checkpointed blocks recomputed in the backward.
TEST(DistZero, Stage3WithPrefetchEqualsUnshardedWithAccumulation2Ranks) {
  expect_all_ok(2, "zero", kZeroArgs + "zero=3 accum=2 prefetch=1");
}
TEST(DistZero, Stage3WithPrefetchEqualsUnshardedWithGradCheckpointingSynchronous2Ranks) {
  expect_all_ok(2, "zero", kZeroArgs + "zero=3 ckpt=1 overlap=0 prefetch=1");
}
TEST(DistZero, Stage3EqualsUnshardedFloat32_2Ranks) {
  expect_all_ok(2, "zero", kZeroArgs + "zero=3 dtype=f32 tol=1e-5");
}

// --- resume on another world size: 5 steps on W1 ranks with zero Z1, a checkpoint (each rank its
// own optimizer shard), then 5 more on W2 ranks with zero Z2 that re-split the optimizer state:
// the continued losses and the final parameters equal one process that ran all 10 steps on the
// same global batch (fp64, 1e-10).
void expect_world_size_change(int w1, int z1, int w2, int z2, const std::string& extra = "") {
  TempDir dir;
  const std::string common = " reshard global=8 before=5 steps=10 dir=" + dir.path().string() +
                             "/run out=" + dir.path().string() + extra;
  auto launch = [&](int n, int zero, const std::string& phase) {
    return clipper::test::run(clipper::test::clipper_bin() + " launch --nproc-per-node " +
                              std::to_string(n) + " -- " + worker() + common + " phase=" + phase +
                              " zero=" + std::to_string(zero));
  };
  const auto a = launch(w1, z1, "save");
  ASSERT_EQ(a.exit_code, 0) << a.output;
  const auto b = launch(w2, z2, "load");
  EXPECT_EQ(b.exit_code, 0) << b.output;
  for (int i = 0; i < w2; ++i) {
    const auto log = rank_log(dir, i);
    EXPECT_NE(log.find("OK reshard max"), std::string::npos) << "rank " << i << ": " << log;
  }
}
// A dist.zero 3 checkpoint exported offline (read_state_dict assembles the parameter shards from
// the rank files): a rank file that fails its manifest CRC-32 is an error naming it (it was read
// as it was, corrupted weights and all).
TEST(DistCheckpoint, OfflineAssemblyOfZero3ChecksTheRankFilesCrc) {
  TempDir dir;
  const auto save = clipper::test::run(
      clipper::test::clipper_bin() + " launch --nproc-per-node 2 -- " + worker() +
      " reshard global=8 before=1 steps=2 zero=3 phase=save dir=" + dir.file("run") +
      " out=" + dir.path().string());
  ASSERT_EQ(save.exit_code, 0) << save.output;
  std::string ckpt;  // the committed step folder (the one with model.json)
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir.file("run")))
    if (e.path().filename() == "model.json") ckpt = e.path().parent_path().string();
  ASSERT_FALSE(ckpt.empty()) << save.output;
  // dist_worker's zero_spec: tiny-vit made smaller.
  const auto yaml = dir.write(
      "zero-vit.yaml",
      "embed_dim: 16\nvision_cfg: {image_size: 8, layers: 2, width: 32, patch_size: 4, "
      "head_width: 16}\ntext_cfg: {context_length: 8, vocab_size: 64, width: 32, heads: 2, "
      "layers: 2}\ntokenizer: clip\n");
  const std::string export_cmd = clipper::test::clipper_bin() + " export " + ckpt + " --model " +
                                 yaml + " --format openclip --out ";
  const auto good = clipper::test::run(export_cmd + dir.file("good"));
  ASSERT_EQ(good.exit_code, 0) << good.output;
  const std::string victim = ckpt + "/rank_00001.safetensors";
  {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-5, std::ios::end);
    const char c = static_cast<char>(f.get() ^ 0x5a);
    f.seekp(-5, std::ios::end);
    f.put(c);
  }
  const auto bad = clipper::test::run(export_cmd + dir.file("bad"));
  EXPECT_NE(bad.exit_code, 0) << bad.output;
  EXPECT_NE(bad.output.find(victim), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("CRC-32"), std::string::npos) << bad.output;
}

TEST(DistWorldSizeChange, From4RanksZero1To2RanksZero2) {
  expect_world_size_change(4, 1, 2, 2);
}
// Full sharding saves each rank's parameter shards (no gather): re-split for any stage and world
// size (2 -> 4 ranks within stage 3, 4 ranks of stage 3 -> 1 of stage 0, 2 of stage 0 -> 4 of 3).
// With a weight average (ema=0.9): zero 3 saves this rank's shards of it, reloaded bit for bit on
// the same world size (the save phase checks), re-split, assembled or cut on another (the load
// phase: equal to one process's average).
TEST(DistWorldSizeChange, From2RanksZero3To4RanksZero3) {
  expect_world_size_change(2, 3, 4, 3, " ema=0.9");
}
TEST(DistWorldSizeChange, From2RanksZero1To1RankZero0) {
  expect_world_size_change(2, 1, 1, 0);
}
TEST(DistWorldSizeChange, From4RanksZero0To2RanksZero0) {
  expect_world_size_change(4, 0, 2, 0);
}
TEST(DistWorldSizeChange, From4RanksZero3To1RankZero0) {
  expect_world_size_change(4, 3, 1, 0, " ema=0.9");
}
TEST(DistWorldSizeChange, From2RanksZero0To4RanksZero3) {
  expect_world_size_change(2, 0, 4, 3, " ema=0.9");
}

// --- issue 24 item 1: a checkpoints folder that is not shared between the ranks -----------------
// Rank R's run folder is DIR/rank<R> (dist_worker's "unshared"), as with a relative
// train.output_dir on two nodes started in different working folders.
std::string expect_unshared_fails(const TempDir& dir, const std::string& mode) {
  const auto r = clipper::test::run(
      clipper::test::clipper_bin() + " launch --nproc-per-node 2 -- " + worker() +
      " unshared mode=" + mode + " dir=" + dir.path().string() + " out=" + dir.path().string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (int i = 0; i < 2; ++i)
    EXPECT_EQ(rank_log(dir, i).rfind("OK unshared " + mode, 0), 0u) << rank_log(dir, i) << r.output;
  return rank_log(dir, 0);
}

// The probe at the start fails on every rank, naming both folders, and leaves no probe file.
TEST(DistCheckpoint, AFolderNotSharedBetweenRanksFailsTheProbeNamingBothFolders) {
  TempDir dir;
  const std::string log = expect_unshared_fails(dir, "probe");
  const std::string ckpt0 = dir.path().string() + "/rank0/checkpoints",
                    ckpt1 = dir.path().string() + "/rank1/checkpoints";
  EXPECT_NE(log.find("not shared between the ranks: rank 0 writes to"), std::string::npos) << log;
  EXPECT_NE(log.find(":" + ckpt0 + ", rank 1 to "), std::string::npos) << log;
  EXPECT_NE(log.find(":" + ckpt1 + " (rank 0 sees the probe file of 1 of 2 ranks)"),
            std::string::npos)
      << log;
  EXPECT_EQ(rank_log(dir, 1), log);  // the same error on every rank
  EXPECT_EQ(clipper::test::folder_tree(ckpt0), clipper::test::Tree{});
  EXPECT_EQ(clipper::test::folder_tree(ckpt1), clipper::test::Tree{});
}

// Without the probe, the save fails at its commit on every rank and commits nothing: rank 0 does
// not see rank 1's files. Before, step_00000001 was committed in rank 0's folder without
// rank_00001.* (they were in rank 1's .tmp-step_00000001), a checkpoint no resume could take.
TEST(DistCheckpoint, AFolderNotSharedBetweenRanksIsNeverCommitted) {
  TempDir dir;
  const std::string log = expect_unshared_fails(dir, "commit");
  EXPECT_NE(log.find("rank 1 wrote rank_00001.safetensors"), std::string::npos) << log;
  EXPECT_NE(log.find("is the run folder shared between the ranks?"), std::string::npos) << log;
  EXPECT_NE(rank_log(dir, 1).find("failed on rank 0"), std::string::npos) << rank_log(dir, 1);
  using clipper::test::Tree;
  EXPECT_EQ(clipper::test::folder_tree(dir.path() / "rank0/checkpoints"),
            (Tree{".tmp-step_00000001/", ".tmp-step_00000001/config.yaml",
                  ".tmp-step_00000001/model.json", ".tmp-step_00000001/rank_00000.json",
                  ".tmp-step_00000001/rank_00000.safetensors"}));
  EXPECT_EQ(clipper::test::folder_tree(dir.path() / "rank1/checkpoints"),
            (Tree{".tmp-step_00000001/", ".tmp-step_00000001/rank_00001.json",
                  ".tmp-step_00000001/rank_00001.safetensors"}));
}

// --- failures end every rank, never a hang ------------------------------------------------------
TEST(DistFailure, KilledRankMakesTheOthersFailWithinTheTimeout) {
  TempDir dir;
  clipper::dist::LaunchOptions o;
  o.nproc_per_node = 3;
  o.stop_others_on_failure = false;  // watch each survivor end on its own
  o.command = {worker(), "die", "victim=1", "after=3", "timeout=5", "out=" + dir.path().string()};
  const auto start = Clock::now();
  const auto res = clipper::dist::run_ranks(o);
  const double took = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(res.exit_codes[1], 128 + SIGKILL);
  for (int r : {0, 2}) {
    EXPECT_EQ(res.exit_codes[r], 1) << rank_log(dir, r);
    const auto log = rank_log(dir, r);
    EXPECT_NE(log.find("error: rank " + std::to_string(r) + "/3 (gloo): all_reduce of step"),
              std::string::npos)
        << log;
    EXPECT_NE(log.find("failed after"), std::string::npos) << log;
  }
  EXPECT_LT(took, 5.0 + 15.0) << "the survivors took too long";
}

TEST(DistFailure, StalledRankTimesOutAndLaunchStopsEveryone) {
  TempDir dir;
  const auto start = Clock::now();
  const auto r = clipper::test::run(clipper::test::clipper_bin() +
                                    " launch --nproc-per-node 2 --kill-grace 2 -- " + worker() +
                                    " stall victim=1 after=2 timeout=2 out=" + dir.path().string());
  const double took = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(r.exit_code, 1) << r.output;
  const auto log = rank_log(dir, 0);
  EXPECT_NE(log.find("error: rank 0/2 (gloo): all_reduce of step 2 failed after"),
            std::string::npos)
      << log;
  EXPECT_NE(
      r.output.find("launch: rank 0 (local 0) exited with code 1; stopping the other 1 rank(s)"),
      std::string::npos)
      << r.output;
  EXPECT_LT(took, 2.0 + 20.0);
}

TEST(DistFailure, StartupTimeoutWhenAPeerNeverComes) {
  // Rank 0 of a world of 2 whose rank 1 never starts: the rendezvous gives up after the start
  // timeout.
  TempDir dir;
  const int port = clipper::dist::find_free_port();
  const auto start = Clock::now();
  const auto r = clipper::test::run(
      "env RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 "
      "MASTER_PORT=" +
      std::to_string(port) + " " + worker() + " hello start_timeout=2 out=" + dir.path().string());
  const double took = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(rank_log(dir, 0).find("error: rank 0/2 (gloo): rendezvous at 127.0.0.1:" +
                                  std::to_string(port)),
            std::string::npos)
      << rank_log(dir, 0);
  EXPECT_LT(took, 2.0 + 20.0);
}

// --- launchers ----------------------------------------------------------------------------------
TEST(DistGroup, AgreementsAndBroadcastOn4Ranks) {
  expect_all_ok(4, "hello", "");
}

TEST(DistLaunch, TwoNodesOnThisMachine) {
  // Two launchers, as on two nodes: node 1 in the background, node 0 in front.
  TempDir dir;
  const int port = clipper::dist::find_free_port();
  const std::string common =
      clipper::test::clipper_bin() +
      " launch --nproc-per-node 2 --nnodes 2 --master-addr 127.0.0.1 --master-port " +
      std::to_string(port);
  const std::string cmd = worker() + " hello out=" + dir.path().string();
  const auto r =
      clipper::test::run("bash -c '" + common + " --node-rank 1 -- " + cmd + " & p=$!; " + common +
                         " --node-rank 0 -- " + cmd + "; a=$?; wait $p; b=$?; exit $((a | b))'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(rank_log(dir, 3).find("OK hello rank 3/4 (node 1/2, local 1/2) from torchrun"),
            std::string::npos)
      << rank_log(dir, 3) << r.output;
  EXPECT_NE(rank_log(dir, 0).find("OK hello rank 0/4 (node 0/2, local 0/2)"), std::string::npos)
      << rank_log(dir, 0);
}

TEST(DistLaunch, RankExitCodeIsTheLaunchersAndTheOthersAreStopped) {
  TempDir dir;
  const auto start = Clock::now();
  const auto r = clipper::test::run(clipper::test::clipper_bin() +
                                    " launch --nproc-per-node 3 --kill-grace 5 -- " + worker() +
                                    " exit rank=2 code=7 out=" + dir.path().string());
  const double took = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(r.exit_code, 7) << r.output;
  EXPECT_LT(took, 30.0);            // the others would sleep 60 s
  EXPECT_EQ(rank_log(dir, 0), "");  // stopped by SIGTERM before writing
}

TEST(DistLaunch, ForwardsSigtermToEveryRank) {
  TempDir dir;
  const std::string out = dir.path().string();
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string bin = clipper::test::clipper_bin(), w = worker(), o = "out=" + out;
    ::execl(bin.c_str(), bin.c_str(), "launch", "--nproc-per-node", "2", "--", w.c_str(),
            "wait_signal", "code=0", o.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (Clock::now() < deadline && (rank_log(dir, 0).find("ready") == std::string::npos ||
                                     rank_log(dir, 1).find("ready") == std::string::npos))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  for (int i = 0; i < 2; ++i)
    EXPECT_NE(rank_log(dir, i).find("got signal 15"), std::string::npos) << rank_log(dir, i);
}

// The launcher forwards `sig` to both ranks, which exit 75 as `clipper train` does after saving;
// the launcher waits for both (their processes are gone when it exits) and exits 75 itself.
void expect_forwarded_and_stopped(int sig) {
  TempDir dir;
  const std::string out = dir.path().string();
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string bin = clipper::test::clipper_bin(), w = worker(), o = "out=" + out;
    ::execl(bin.c_str(), bin.c_str(), "launch", "--nproc-per-node", "2", "--", w.c_str(),
            "wait_signal", "code=75", o.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::vector<pid_t> ranks(2, 0);
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (Clock::now() < deadline && (ranks[0] == 0 || ranks[1] == 0)) {
    for (int i = 0; i < 2; ++i) {
      const auto log = rank_log(dir, i);
      const auto at = log.find("ready pid=");
      if (at != std::string::npos && log.find('\n', at) != std::string::npos)
        ranks[i] = static_cast<pid_t>(std::stol(log.substr(at + 10)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(ranks[0] > 0 && ranks[1] > 0) << "the ranks did not start";
  ::kill(pid, sig);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "the launcher died of signal "
                                 << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WEXITSTATUS(status), 75);
  for (int i = 0; i < 2; ++i) {
    EXPECT_NE(rank_log(dir, i).find("got signal " + std::to_string(sig)), std::string::npos)
        << rank_log(dir, i);
    EXPECT_TRUE(::kill(ranks[i], 0) != 0 && errno == ESRCH) << "rank " << i << " still exists";
  }
}

TEST(DistLaunch, ForwardsSigintAndExits75WhenTheRanksStoppedAfterSaving) {
  expect_forwarded_and_stopped(SIGINT);
}
TEST(DistLaunch, ForwardsSigtermAndExits75WhenTheRanksStoppedAfterSaving) {
  expect_forwarded_and_stopped(SIGTERM);
}
TEST(DistLaunch, ForwardsSigusr1AndExits75WhenTheRanksStoppedAfterSaving) {
  expect_forwarded_and_stopped(SIGUSR1);
}

// --- escalation: no rank outlives its launcher's grace period ---------------------------------

// Starts `clipper launch --kill-grace 1 --nproc-per-node 1 -- dist_worker ignore_stop` and waits
// for the rank's "ready pid=P child=C" line; returns the launcher's pid and fills rank and child.
pid_t launch_ignoring_rank(const TempDir& dir, pid_t& rank, pid_t& child) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string bin = clipper::test::clipper_bin(), w = worker(),
                      o = "out=" + dir.path().string();
    ::execl(bin.c_str(), bin.c_str(), "launch", "--kill-grace", "1", "--nproc-per-node", "1", "--",
            w.c_str(), "ignore_stop", o.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  rank = child = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (Clock::now() < deadline && child == 0) {
    const auto log = rank_log(dir, 0);
    const auto at = log.find("ready pid=");
    if (at != std::string::npos && log.find('\n', at) != std::string::npos) {
      rank = static_cast<pid_t>(std::stol(log.substr(at + 10)));
      child = static_cast<pid_t>(std::stol(log.substr(log.find("child=", at) + 6)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pid;
}

// Waits up to `seconds` for `pid`, a child of this process; its wait status, or -1 (then it is
// killed with its group, so that no test leaves it behind).
int wait_for(pid_t pid, double seconds) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  int status = 0;
  while (Clock::now() < deadline) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(-pid, SIGKILL);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return -1;
}

// At the end of a test, whatever it asserted: SIGKILL to the rank's process group (so that a rank
// the code under test failed to end never holds the test's output open), the orphans reaped and
// this process no subreaper any more.
struct EndRankGroup {
  pid_t group = 0;
  ~EndRankGroup() {
    if (group > 0) ::kill(-group, SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    ::prctl(PR_SET_CHILD_SUBREAPER, 0);
  }
};

TEST(DistLaunch, EscalatesToSigkillOfTheRanksGroups) {
  // Orphans (the rank's child once the rank is gone) come to this process, to be waited for.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  TempDir dir;
  pid_t rank = 0, child = 0;
  const pid_t launcher = launch_ignoring_rank(dir, rank, child);
  const EndRankGroup cleanup{rank};
  ASSERT_GT(child, 0) << "the rank did not start: " << rank_log(dir, 0);
  const auto start = Clock::now();
  ::kill(launcher, SIGINT);
  const int status = wait_for(launcher, 20);
  const double took = std::chrono::duration<double>(Clock::now() - start).count();
  ASSERT_TRUE(status != -1 && WIFEXITED(status)) << "the launcher waited for ever";
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGKILL);
  EXPECT_LT(took, 10.0);
  EXPECT_TRUE(::kill(rank, 0) != 0 && errno == ESRCH) << "the rank still exists";
  const int child_status = wait_for(child, 5);  // killed with the rank's group
  EXPECT_TRUE(child_status != -1 && WIFSIGNALED(child_status) && WTERMSIG(child_status) == SIGKILL)
      << "the rank's child was not killed with its group";
}

TEST(DistLaunch, ARankEndsItselfWhenItsLauncherDies) {
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);  // the orphaned rank comes to this process
  TempDir dir;
  pid_t rank = 0, child = 0;
  const pid_t launcher = launch_ignoring_rank(dir, rank, child);
  const EndRankGroup cleanup{rank};
  ASSERT_GT(child, 0) << "the rank did not start: " << rank_log(dir, 0);
  ::kill(launcher, SIGKILL);
  ::waitpid(launcher, nullptr, 0);
  const int status = wait_for(rank, 15);  // grace 1 s; it would otherwise sleep 60 s
  EXPECT_TRUE(status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the rank lingered after its launcher died: " << rank_log(dir, 0);
  const int child_status = wait_for(child, 5);
  EXPECT_TRUE(child_status != -1 && WIFSIGNALED(child_status)) << "the rank's child lingered";
}

TEST(DistLaunch, LaunchRunsAClipperVerb) {
  // `clipper launch -- config keys` runs this clipper's own verb in each rank.
  const auto r = clipper::test::run(clipper::test::clipper_bin() +
                                    " launch --nproc-per-node 2 -- config keys");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::size_t count = 0;
  for (std::size_t p = r.output.find("dist.bucket_mb"); p != std::string::npos;
       p = r.output.find("dist.bucket_mb", p + 1))
    ++count;
  EXPECT_EQ(count, 2u) << r.output;
}

TEST(DistLaunch, TorchrunStartsTheRanks) {
  TempDir dir;
  const std::string torchrun = CLIPPER_TORCHRUN;  // the venv's, next to CLIPPER_PYTHON
  ASSERT_TRUE(std::filesystem::exists(torchrun)) << torchrun;
  const int port = clipper::dist::find_free_port();
  const auto r = clipper::test::run(
      "OMP_NUM_THREADS=1 " + torchrun + " --no-python --nproc-per-node 2 --master-port " +
      std::to_string(port) + " " + worker() + " clip local=1 grad=1 out=" + dir.path().string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (int i = 0; i < 2; ++i)
    EXPECT_EQ(rank_log(dir, i).rfind("OK clip", 0), 0u) << rank_log(dir, i) << r.output;
  const auto hello = clipper::test::run(
      "OMP_NUM_THREADS=1 " + torchrun + " --no-python --nproc-per-node 2 --master-port " +
      std::to_string(port) + " " + worker() + " hello out=" + dir.path().string());
  EXPECT_EQ(hello.exit_code, 0) << hello.output;
  EXPECT_NE(rank_log(dir, 1).find("OK hello rank 1/2 (node 0/1, local 1/2) from torchrun"),
            std::string::npos)
      << rank_log(dir, 1);
}

}  // namespace
