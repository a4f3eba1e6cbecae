// The README cannot drift from the program: every `build/bin/clipper ...` line of its "Using it"
// block runs here, with tiny inputs put in for its placeholders (label e2e). A new placeholder
// or an optional part this test does not know fails the test, so the README and this list move
// together.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <vector>

#include "test_util.hpp"

using clipper::test::run;
using clipper::test::source_path;

namespace {

// The commands of the first ```bash block after "## Using it", comments cut off.
std::vector<std::string> readme_commands() {
  std::ifstream in(source_path("README.md"));
  std::vector<std::string> out;
  bool section = false, block = false;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("## ", 0) == 0) section = line == "## Using it";
    if (!section) continue;
    if (line.rfind("```", 0) == 0) {
      if (block) break;
      block = true;
      continue;
    }
    if (!block || line.rfind("build/bin/clipper", 0) != 0) continue;
    const auto hash = line.find("  #");
    out.push_back(std::regex_replace(line.substr(0, hash), std::regex("\\s+$"), ""));
  }
  return out;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (auto p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size()))
    s.replace(p, from.size(), to);
  return s;
}

}  // namespace

TEST(Readme, EveryCommandOfUsingItRuns) {
  clipper::test::TempDir t;
  const std::string w = t.path().string(), fm = "/usr/share/datasets/fashion-mnist/";
  const auto cfg =
      t.write("demo.yaml",
              "model: {name: tiny-fmnist-vit}\n"
              "data: {train_shards: '" +
                  w +
                  "/shards/shard-{00000..00000}.tar', workers: 1,"
                  " sample_shuffle_buffer: 64, sample_shuffle_initial: 16}\n"
                  "train: {batch_size: 32, max_steps: 4, device: cpu, output_dir: '" +
                  w +
                  "/runs', run_name: readme, threads: 1}\n"
                  "eval: {zeroshot_shards: '" +
                  w + "/shards/shard-00000.tar', zeroshot_classes: '" +
                  source_path("configs/data/fashion_mnist.yaml") + "', batch_size: 64}\n");
  const auto captions = t.write("captions.txt", "a photo of a sneaker.\na bag\n");
  // Placeholder -> tiny input, in this order (longer ones first).
  const std::vector<std::pair<std::string, std::string>> subs = {
      {"build/bin/clipper", clipper::test::clipper_bin()},
      {" [--set key=value]... [--resume latest|PATH]", ""},
      {"-- train configs/demo.yaml", "-- train " + cfg + " --set train.run_name=launch"},
      {"configs/demo.yaml", cfg},
      {"shards OUT --from-idx IMAGES LABELS --classes classes.yaml",
       "shards " + w + "/shards --from-idx " + fm + "t10k-images-idx3-ubyte.gz " + fm +
           "t10k-labels-idx1-ubyte.gz --classes " + source_path("configs/data/fashion_mnist.yaml") +
           " --resize 0 --limit 256"},
      {"runs/<run>/checkpoints/step_00000936", w + "/runs/readme/checkpoints/step_00000004"},
      {"runs/<run>/export", w + "/runs/readme/export"},
      {"--out DIR", "--out " + w + "/exported"},
      {"--weights DIR", "--weights " + w + "/exported"},
      {"captions.txt", captions},
      {"--out text.npy", "--out " + w + "/text.npy"},
      {"--model ViT-B-32 --batch 256 --device cuda",
       "--model tiny-vit --batch 4 --device cpu --steps 2 --warmup 1"},
      {"'shards/{00000..00009}.tar'", "'" + w + "/shards/shard-{00000..00000}.tar' --batch 32"},
  };
  const auto commands = readme_commands();
  ASSERT_GE(commands.size(), 10u) << "the README's \"Using it\" block was not found";
  for (const auto& line : commands) {
    std::string cmd = line;
    for (const auto& [from, to] : subs) cmd = replace_all(cmd, from, to);
    // Anything left that reads as a placeholder: this test must learn it.
    const std::string plain = replace_all(cmd, w, "");  // the temp folder's random name aside
    ASSERT_FALSE(std::regex_search(plain, std::regex("<[a-z]+>|\\[|\\b[A-Z]{3,}\\b")))
        << "README line with a placeholder this test does not fill in: " << line;
    const auto r = run(cmd);
    EXPECT_EQ(r.exit_code, 0) << line << "\nran: " << cmd << "\n" << r.output;
  }
}

// The README's launch line, stopped after saving, prints the command that continues it: the same
// launch line (launcher and its flags, the run name once) with --resume latest added once. Run as
// printed, it resumes the run on as many ranks.
TEST(Readme, ContinueWithLineOfALaunchedRunResumesIt) {
  std::string launch;
  for (const auto& line : readme_commands())
    if (line.find(" launch ") != std::string::npos) launch = line;
  ASSERT_FALSE(launch.empty()) << "the README's \"Using it\" block has no launch line";
  clipper::test::TempDir t;
  const std::string w = t.path().string(), fm = "/usr/share/datasets/fashion-mnist/";
  const auto shards =
      run(clipper::test::clipper_bin() + " shards " + w + "/shards --from-idx " + fm +
          "t10k-images-idx3-ubyte.gz " + fm + "t10k-labels-idx1-ubyte.gz" + " --classes " +
          source_path("configs/data/fashion_mnist.yaml") + " --resize 0 --limit 256");
  ASSERT_EQ(shards.exit_code, 0) << shards.output;
  const auto cfg = t.write("demo.yaml",
                           "model: {name: tiny-fmnist-vit}\n"
                           "data: {train_shards: '" +
                               w +
                               "/shards/shard-00000.tar', workers: 1,"
                               " sample_shuffle_buffer: 64, sample_shuffle_initial: 16}\n"
                               "train: {batch_size: 32, max_steps: 4, device: cpu, "
                               "output_dir: '" +
                               w + "/runs', threads: 1}\n");
  std::string cmd = replace_all(launch, "build/bin/clipper", clipper::test::clipper_bin());
  cmd = replace_all(cmd, "configs/demo.yaml", cfg) +
        " --set train.run_name=ctrlc --set train.stop_at_step=2";
  const auto stopped = run(cmd);
  ASSERT_EQ(stopped.exit_code, 75) << cmd << "\n" << stopped.output;
  const auto at = stopped.output.find("continue with: ");
  ASSERT_NE(at, std::string::npos) << stopped.output;
  const auto printed = stopped.output.substr(at + 15, stopped.output.find('\n', at) - at - 15);
  EXPECT_EQ(printed, cmd + " --resume latest");
  const auto resumed = run(printed);
  EXPECT_TRUE(resumed.exit_code == 0 || resumed.exit_code == 75) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
  EXPECT_NE(resumed.output.find("rank 0/2 ("), std::string::npos)
      << "not resumed on 2 ranks: " << resumed.output;
}
