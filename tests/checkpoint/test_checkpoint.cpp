#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "clipper/checkpoint/checkpoint.hpp"
#include "clipper/core/error.hpp"
#include "test_util.hpp"

using namespace clipper;
namespace fs = std::filesystem;

namespace {

checkpoint::State make_state(int step) {
  checkpoint::State s;
  s.model = {{"visual.proj", at::full({4, 3}, static_cast<float>(step))},
             {"logit_scale", at::tensor(2.6593f)}};
  s.optimizer = {{"visual.proj.exp_avg", at::full({4, 3}, 0.5f * step)}};
  s.trainer = {{"step", step}, {"epoch", 0}};
  s.config_yaml = "model:\n  name: tiny-vit\n";
  s.rank_json = {{"loader", {{"position", step * 7}}}};
  s.rank_tensors = {{"cpu_rng", at::arange(8, at::kByte)}};
  return s;
}

void flip_byte(const std::string& path, std::streamoff at_offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(at_offset);
  char c;
  f.get(c);
  f.seekp(at_offset);
  f.put(static_cast<char>(c ^ 0x40));
}

}  // namespace

TEST(Checkpoint, SaveLoadRoundTripAndKeepLast) {
  test::TempDir d;
  checkpoint::Manager m(d.path().string(), 0, 1, 2, [] {});
  for (int step : {10, 20, 30}) m.save(step, make_state(step));
  int count = 0;
  for (const auto& e : fs::directory_iterator(m.checkpoints_dir())) {
    (void)e;
    ++count;
  }
  EXPECT_EQ(count, 2);  // keep_last
  const auto latest = m.latest_valid();
  ASSERT_TRUE(latest);
  EXPECT_EQ(checkpoint::step_of(*latest), 30);
  const auto s = checkpoint::load(*latest, 0, 1);
  ASSERT_EQ(s.model.size(), 2u);
  EXPECT_EQ(s.model[0].first, "visual.proj");
  EXPECT_TRUE(at::equal(s.model[0].second, at::full({4, 3}, 30.0f)));
  EXPECT_EQ(s.trainer["step"], 30);
  EXPECT_EQ(s.rank_json["loader"]["position"], 210);
  EXPECT_TRUE(at::equal(s.rank_tensors[0].second, at::arange(8, at::kByte)));
  EXPECT_EQ(s.config_yaml, "model:\n  name: tiny-vit\n");
  EXPECT_THROW(checkpoint::load(*latest, 0, 2), core::InputError);  // world size differs
}

TEST(Checkpoint, TruncatedAndBitFlippedAreSkipped) {
  test::TempDir d;
  checkpoint::Manager m(d.path().string(), 0, 1, 5, [] {});
  for (int step : {1, 2, 3}) m.save(step, make_state(step));
  const std::string s3 = (fs::path(m.checkpoints_dir()) / checkpoint::step_dir_name(3)).string();
  const std::string s2 = (fs::path(m.checkpoints_dir()) / checkpoint::step_dir_name(2)).string();
  fs::resize_file(s3 + "/model.safetensors", fs::file_size(s3 + "/model.safetensors") - 5);
  flip_byte(s2 + "/optimizer.safetensors", 100);
  try {
    checkpoint::validate(s3);
    FAIL();
  } catch (const core::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  try {
    checkpoint::validate(s2);
    FAIL();
  } catch (const core::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("CRC-32"), std::string::npos) << e.what();
  }
  const auto latest = m.latest_valid();
  ASSERT_TRUE(latest);
  EXPECT_EQ(checkpoint::step_of(*latest), 1);
  fs::remove(fs::path(*latest) / "manifest.json");
  EXPECT_FALSE(m.latest_valid());
}

TEST(Checkpoint, KillNineDuringWritesNeverLeavesACorruptLatest) {
  const std::string writer =
      std::string(CLIPPER_BINARY_DIR) + "/tests/checkpoint/checkpoint_writer";
  std::mt19937 rng(1234);
  std::int64_t last_valid_step = 0;
  for (int trial = 0; trial < 25; ++trial) {
    test::TempDir d;
    const pid_t pid = fork();
    if (pid == 0) {
      execl(writer.c_str(), writer.c_str(), d.path().c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(150 + rng() % 400));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "writer ended on its own: " << status;
    checkpoint::Manager m(d.path().string(), 0, 1, 3, [] {});
    const auto latest = m.latest_valid();
    if (!latest) continue;  // killed before the first save completed
    const auto s = checkpoint::load(*latest, 0, 1);
    const auto step = checkpoint::step_of(*latest);
    EXPECT_TRUE(at::equal(s.model[0].second, at::full({512, 1024}, static_cast<float>(step))));
    EXPECT_EQ(s.rank_json["position"], step * 10);
    last_valid_step = std::max<std::int64_t>(last_valid_step, step);
  }
  EXPECT_GT(last_valid_step, 0);  // the trials did reach complete checkpoints
}
