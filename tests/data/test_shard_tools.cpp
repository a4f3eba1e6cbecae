// `clipper shards` at real size: the same shards on any number of threads, resume after a kill,
// per-shard and run statistics, progress lines, quiet decoders, and CSV tables as OpenCLIP reads
// them (separator, path rule, each sample's source).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "clipper/core/error.hpp"
#include "clipper/core/progress.hpp"
#include "clipper/data/dataset_stats.hpp"
#include "clipper/data/shard_list.hpp"
#include "clipper/data/shard_writer.hpp"
#include "clipper/data/tar_stream.hpp"
#include "fixtures.hpp"
#include "test_util.hpp"

using namespace clipper;
namespace fs = std::filesystem;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

nlohmann::json json_file(const std::string& path) {
  return nlohmann::json::parse(slurp(path));
}

std::uint32_t crc32(const std::string& s) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

std::string be32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

// A PNG with an iCCP chunk whose profile is not valid zlib data: libpng warns about it.
std::string png_with_bad_icc(int seed) {
  const std::string png = test::encode(test::test_image(40, 30, seed), ".png");
  const std::string body = std::string("iCCP") + "icc" + '\0' + '\0' + "not zlib data at all";
  const std::string chunk =
      be32(static_cast<std::uint32_t>(body.size() - 4)) + body + be32(crc32(body));
  return png.substr(0, 33) + chunk + png.substr(33);  // after the signature and IHDR
}

// A folder with good images (JPEG, PNG), one without a caption, one corrupt, one not an image.
void make_folder(const test::TempDir& d, int n, int w = 40, int h = 30) {
  for (int i = 0; i < n; ++i) {
    char stem[32];
    std::snprintf(stem, sizeof stem, "in/%02d/img%04d", i % 3, i);
    const bool png = i % 4 == 1;
    d.write(std::string(stem) + (png ? ".png" : ".jpg"),
            test::encode(test::test_image(w + i % 7, h + i % 5, i), png ? ".png" : ".jpg"));
    if (i != 5) d.write(std::string(stem) + ".txt", "caption number " + std::to_string(i));
  }
  d.write("in/bad/corrupt.jpg", std::string("\xFF\xD8\xFF\xE0 truncated jpeg", 20));
  d.write("in/bad/corrupt.txt", "x");
  d.write("in/bad/text.png", "this is text, not an image");
  d.write("in/bad/text.txt", "y");
}

data::ShardWriterOptions opts(const std::string& out, int threads) {
  data::ShardWriterOptions o;
  o.out_dir = out;
  o.samples_per_shard = 7;
  o.resize = 24;
  o.threads = threads;
  o.progress_every_s = 0;
  return o;
}

std::vector<std::string> tars_of(const data::ShardsReport& r) {
  return data::expand_braces(r.pattern);
}

}  // namespace

TEST(ShardTools, OneAndThreeThreadsWriteTheSameBytes) {
  test::TempDir d;
  make_folder(d, 40);
  const auto r1 = data::shards_from_folder(d.file("in"), opts(d.file("t1"), 1));
  const auto r3 = data::shards_from_folder(d.file("in"), opts(d.file("t3"), 3));
  EXPECT_EQ(r1.threads, 1);
  EXPECT_EQ(r3.threads, 3);
  EXPECT_EQ(r1.samples, 39);
  ASSERT_EQ(r1.shards.size(), 6u);
  ASSERT_EQ(r3.shards.size(), r1.shards.size());
  for (std::size_t i = 0; i < r1.shards.size(); ++i) {
    const std::string name = fs::path(r1.shards[i]).filename().string();
    EXPECT_EQ(slurp(r1.shards[i]), slurp(r3.shards[i])) << name;
    const std::string st = name.substr(0, name.size() - 4) + "_stats.json";
    EXPECT_EQ(json_file(d.file("t1/" + st)), json_file(d.file("t3/" + st))) << st;
  }
  EXPECT_EQ(slurp(d.file("t1/sizes.json")), slurp(d.file("t3/sizes.json")));
  EXPECT_EQ(r1.failed, r3.failed);
}

TEST(ShardTools, StatsPerShardAndRunAndTheSummary) {
  test::TempDir d;
  make_folder(d, 12);
  const auto r = data::shards_from_folder(d.file("in"), opts(d.file("out"), 2));
  EXPECT_EQ(r.samples, 11);
  EXPECT_EQ(r.inputs, 14);
  EXPECT_EQ(r.skipped, 3);
  EXPECT_EQ(r.failed,
            (std::map<std::string, std::int64_t>{
                {"corrupt_image", 1}, {"missing_caption", 1}, {"unsupported_format", 1}}));
  const auto s0 = json_file(d.file("out/shard-00000_stats.json"));
  EXPECT_EQ(s0["shard"], "shard-00000.tar");
  EXPECT_EQ(s0["samples"], 7);
  EXPECT_EQ(s0["bytes"], static_cast<std::int64_t>(fs::file_size(d.file("out/shard-00000.tar"))));
  EXPECT_EQ(s0["inputs"]["first"], 0);
  EXPECT_GE(s0["image_width"]["min"].get<int>(), 40);
  EXPECT_LE(s0["image_width"]["max"].get<int>(), 46);
  EXPECT_EQ(s0["caption_chars"]["min"], std::string("caption number 0").size());
  EXPECT_EQ(s0["shorter_side_histogram"]["<64"], 7);
  const auto s1 = json_file(d.file("out/shard-00001_stats.json"));
  EXPECT_EQ(s1["inputs"]["first"], s0["inputs"]["end"]);
  EXPECT_EQ(s1["inputs"]["end"], 14);
  const auto run = json_file(d.file("out/stats.json"))["shard"];
  EXPECT_EQ(run["samples"], 11);
  EXPECT_EQ(run["shards"], 2);
  EXPECT_EQ(run["failed_total"], 3);
  EXPECT_EQ(run["failed"]["unsupported_format"], 1);
  const std::string sum = r.summary();
  EXPECT_NE(sum.find("wrote 11 samples in 2 shard(s)"), std::string::npos) << sum;
  EXPECT_NE(sum.find("3 input(s) skipped (corrupt_image 1, missing_caption 1, "
                     "unsupported_format 1)"),
            std::string::npos)
      << sum;
  // Each sample names its source file.
  data::ShardReader rd(d.file("out/shard-00000.tar"));
  data::RawSample smp;
  ASSERT_TRUE(rd.next(smp));
  ASSERT_NE(smp.find("json"), nullptr);
  EXPECT_EQ(nlohmann::json::parse(*smp.find("json"))["source"], d.file("in/00/img0000.jpg"));
}

TEST(ShardTools, RerunRewritesOnlyMissingOrPartialShards) {
  test::TempDir d;
  make_folder(d, 40);
  const auto full = data::shards_from_folder(d.file("in"), opts(d.file("ref"), 2));
  const auto r0 = data::shards_from_folder(d.file("in"), opts(d.file("out"), 2));
  // An interruption's leftovers: shard 2 without its stats (killed before they were written),
  // shard 3 cut short, shard 4 gone with a partial temporary file, shard 5 gone.
  fs::remove(d.file("out/shard-00002_stats.json"));
  fs::resize_file(d.file("out/shard-00003.tar"), 1024);
  fs::rename(d.file("out/shard-00004.tar"), d.file("out/shard-00004.tar.tmp"));
  fs::remove(d.file("out/shard-00005.tar"));
  fs::remove(d.file("out/sizes.json"));
  const auto kept_before = fs::last_write_time(d.file("out/shard-00001.tar"));
  const auto r = data::shards_from_folder(d.file("in"), opts(d.file("out"), 3));
  EXPECT_EQ(r.kept_shards, 2);
  EXPECT_EQ(fs::last_write_time(d.file("out/shard-00001.tar")), kept_before);
  EXPECT_FALSE(fs::exists(d.file("out/shard-00004.tar.tmp")));
  for (std::size_t i = 0; i < full.shards.size(); ++i)
    EXPECT_EQ(slurp(full.shards[i]), slurp(r.shards[i])) << i;
  EXPECT_EQ(slurp(d.file("ref/sizes.json")), slurp(d.file("out/sizes.json")));
  EXPECT_EQ(r.samples, full.samples);
  EXPECT_EQ(r.failed, full.failed);  // the kept shards' failures come from their stats
  EXPECT_NE(r.summary().find("2 shard(s) kept"), std::string::npos) << r.summary();
  // A complete run is kept whole; other settings rewrite everything.
  EXPECT_EQ(data::shards_from_folder(d.file("in"), opts(d.file("out"), 1)).kept_shards, 6);
  auto other = opts(d.file("out"), 1);
  other.resize = 20;
  EXPECT_EQ(data::shards_from_folder(d.file("in"), other).kept_shards, 0);
  (void)r0;
}

TEST(ShardTools, KillNineInTheMiddleThenResume) {
  test::TempDir d;
  make_folder(d, 240, 200, 150);
  const std::string args = " --from-folder " + d.file("in") +
                           " --samples-per-shard 10 --resize 96 --threads 1 --progress-every 0";
  ASSERT_EQ(test::run(test::clipper_bin() + " shards " + d.file("ref") + args).exit_code, 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string cmd =
        "exec " + test::clipper_bin() + " shards " + d.file("out") + args + " > /dev/null 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!fs::exists(d.file("out/shard-00002_stats.json")) &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run ended before the kill";
  EXPECT_FALSE(fs::exists(d.file("out/sizes.json")));
  const auto again = test::run(test::clipper_bin() + " shards " + d.file("out") + args);
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("kept from an earlier run"), std::string::npos) << again.output;
  EXPECT_EQ(slurp(d.file("ref/sizes.json")), slurp(d.file("out/sizes.json")));
  for (const auto& url : data::expand_braces(d.file("ref/shard-{00000..00023}.tar"))) {
    const std::string name = fs::path(url).filename().string();
    EXPECT_EQ(slurp(url), slurp(d.file("out/" + name))) << name;
  }
}

TEST(ShardTools, ProgressLinesAndQuietDecoders) {
  test::TempDir d;
  make_folder(d, 30);
  for (int i = 0; i < 3; ++i) {
    d.write("in/icc/p" + std::to_string(i) + ".png", png_with_bad_icc(i));
    d.write("in/icc/p" + std::to_string(i) + ".txt", "with a broken colour profile");
  }
  const auto r =
      test::run(test::clipper_bin() + " shards " + d.file("out") + " --from-folder " +
                d.file("in") + " --samples-per-shard 5 --threads 2 --progress-every " + "0.000001");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("inputs/s"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("shards done"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" bad, ETA "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("wrote 32 samples"), std::string::npos) << r.output;  // ICC ones kept
  EXPECT_EQ(r.output.find("libpng"), std::string::npos) << r.output;
  // Skips are warnings naming the file.
  EXPECT_NE(r.output.find("text.png"), std::string::npos) << r.output;
  // The loader reads them without decoder noise either.
  const auto b = test::run(test::clipper_bin() + " bench loader '" + d.file("out") +
                           "/shard-{00000..00006}.tar' --threads 1 --batch 4 --size 32");
  EXPECT_EQ(b.exit_code, 0) << b.output;
  EXPECT_EQ(b.output.find("libpng"), std::string::npos) << b.output;
}

TEST(ShardTools, CsvSeparatorIsSniffedAndNamedInErrors) {
  test::TempDir d;
  d.write("img/a.jpg", test::jpeg_bytes(50, 40, 1));
  d.write("img/b.png", test::encode(test::test_image(30, 20, 2), ".png"));
  d.write("img/fake.png", "not a png");
  d.write("tab.csv", "filepath\ttitle\nimg/a.jpg\ta cat, sitting\nimg/b.png\ta dog\n");
  d.write("comma.csv", "filepath,title\nimg/a.jpg,\"a cat, sitting\"\nimg/fake.png,x\n");
  data::ShardWriterOptions o = opts(d.file("o1"), 1);
  data::CsvOptions csv;  // separator 0: sniffed
  const auto r1 = data::shards_from_csv(d.file("tab.csv"), csv, o);
  EXPECT_EQ(r1.samples, 2);
  o.out_dir = d.file("o2");
  const auto r2 = data::shards_from_csv(d.file("comma.csv"), csv, o);
  EXPECT_EQ(r2.samples, 1);
  EXPECT_EQ(r2.failed.at("unsupported_format"), 1);
  data::ShardReader rd(r2.shards[0]);
  data::RawSample s;
  ASSERT_TRUE(rd.next(s));
  EXPECT_EQ(*s.find("txt"), "a cat, sitting");
  const auto src = nlohmann::json::parse(*s.find("json"));
  EXPECT_EQ(src["row"], 2);
  EXPECT_EQ(src["table"], d.file("comma.csv"));
  EXPECT_EQ(src["source"], d.file("comma.csv") + " row 2");
  // The wrong separator given: the error names it and the option.
  csv.separator = ',';
  const std::string e = test::error_of([&] { data::shards_from_csv(d.file("tab.csv"), csv, o); });
  EXPECT_NE(e.find("separator: ','"), std::string::npos) << e;
  EXPECT_NE(e.find("--csv-separator"), std::string::npos) << e;
  EXPECT_EQ(e.find('\t'), std::string::npos) << e;  // no invisible tab in the message
  // The same through the verb: a clear error, exit 1; '\t' given as two characters works.
  const auto v = test::run(test::clipper_bin() + " shards " + d.file("o5") + " --from-csv " +
                           d.file("tab.csv") + " --csv-separator , --threads 1");
  EXPECT_EQ(v.exit_code, 1) << v.output;
  EXPECT_NE(v.output.find("no column 'filepath' (separator: ','"), std::string::npos) << v.output;
  const auto vt = test::run(test::clipper_bin() + " shards " + d.file("o6") + " --from-csv " +
                            d.file("tab.csv") + " --csv-separator '\\t' --threads 1");
  EXPECT_EQ(vt.exit_code, 0) << vt.output;
  // OpenCLIP's path rule: from the working directory.
  d.write("sub/t.tsv", "filepath\ttitle\nimg/a.jpg\ta cat\n");
  const auto cwd = fs::current_path();
  fs::current_path(d.path());
  csv.separator = 0;
  csv.paths_from_cwd = true;
  o.out_dir = d.file("o3");
  const auto r3 = data::shards_from_csv("sub/t.tsv", csv, o);
  csv.paths_from_cwd = false;
  o.out_dir = d.file("o4");
  const auto r4 = test::error_of([&] { data::shards_from_csv("sub/t.tsv", csv, o); });
  fs::current_path(cwd);
  EXPECT_EQ(r3.samples, 1);
  EXPECT_NE(r4.find("no readable row"), std::string::npos) << r4;  // sub/img/a.jpg is not there
}

TEST(ShardTools, UndecodableImageGivesTheDecodersReason) {
  test::TempDir d;
  d.write("img/a.jpg", test::jpeg_bytes(50, 40, 1));
  std::string cut = test::encode(test::test_image(60, 50, 3), ".png");
  cut.resize(cut.size() / 2);
  d.write("img/cut.png", cut);
  d.write("bad.csv", "filepath,title\nimg/a.jpg,ok\nimg/cut.png,cut\n");
  const auto r = test::run(test::clipper_bin() + " shards " + d.file("out") + " --from-csv " +
                           d.file("bad.csv") + " --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto pos = r.output.find("cut.png' (" + d.file("bad.csv") + " row 3): ");
  ASSERT_NE(pos, std::string::npos) << r.output;
  const auto line = r.output.substr(pos, r.output.find('\n', pos) - pos);
  EXPECT_GT(line.size(), std::string("cut.png' (" + d.file("bad.csv") + " row 3): ").size() + 8)
      << line;
  EXPECT_NE(line.find("corrupt_image"), std::string::npos) << line;
}

TEST(DataStats, CountsWhatTheLoaderWouldReadAndCaptionLengths) {
  test::TempDir d;
  data::ShardWriterOptions o;
  o.out_dir = d.file("s");
  o.samples_per_shard = 3;
  data::ShardWriter w(o);
  w.write("a", {{"jpg", test::jpeg_bytes(40, 30, 1)}, {"txt", "short"}});
  w.write("b",
          {{"png", test::encode(test::test_image(64, 48, 2), ".png")}, {"txt", "a longer one"}});
  w.write("c", {{"jpg", test::jpeg_bytes(80, 60, 3)}, {"txt", "exactly eight chars"}});
  w.write("d", {{"jpg", test::jpeg_bytes(20, 10, 4)}});  // no caption
  std::string cut = test::encode(test::test_image(30, 30, 5), ".png");
  cut.resize(cut.size() / 2);
  w.write("e", {{"png", cut}, {"txt", "cut"}});
  w.write("f", {{"txt", "no image"}});
  w.write("g", {{"webp", test::encode(test::test_image(50, 40, 6), ".webp")}, {"txt", "ok"}});
  const auto pattern = w.finish().pattern;
  data::DatasetStatsOptions so;
  so.threads = 2;
  so.progress_every_s = 0;
  const test::ByteTokenizer counting(4096);
  const auto s = data::collect_dataset_stats(pattern, so, counting, "bytes", 8);
  EXPECT_EQ(s.shards, 3);
  EXPECT_EQ(s.counters.samples, 4);
  EXPECT_EQ(s.counters.missing_text, 1);
  EXPECT_EQ(s.counters.missing_image, 1);
  EXPECT_EQ(s.counters.image_corrupt, 1);
  EXPECT_EQ(s.formats.at("jpeg"), 2);  // d has no caption: not looked at
  EXPECT_EQ(s.formats.at("png"), 2);
  EXPECT_EQ(s.formats.at("webp"), 1);
  EXPECT_EQ(s.width.percentile(0), 40);
  EXPECT_EQ(s.width.percentile(1), 80);
  EXPECT_EQ(s.height.percentile(0.5), 40);  // of 30, 40, 48, 60
  EXPECT_EQ(s.caption_chars.percentile(0), 2);
  EXPECT_EQ(s.caption_chars.percentile(1), 19);
  // Byte tokens + start + end: "ok" 4, "short" 7, "a longer one" 14, "exactly eight chars" 21.
  EXPECT_EQ(s.tokens.percentile(1), 21);
  EXPECT_EQ(s.captions_cut(), 2);
  const auto j = s.to_json();
  EXPECT_EQ(j["captions_cut"], 2);
  EXPECT_EQ(j["bad_samples"], 3);
  EXPECT_EQ(j["caption_tokens"]["max"], 21);
  const std::string text = s.to_text();
  EXPECT_NE(text.find("4 good, 3 bad"), std::string::npos) << text;
  EXPECT_NE(text.find("2 caption(s) (50.00 %) longer than the context length 8"), std::string::npos)
      << text;
  // The verb, with the CLIP tokenizer, as JSON.
  const auto r = test::run(test::clipper_bin() + " data stats '" + pattern +
                           "' --tokenizer clip --context-length 4 --json --progress-every 0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto vj = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(vj["samples"], 4);
  EXPECT_EQ(vj["tokenizer"], "clip");
  EXPECT_EQ(vj["captions_cut"], 2);  // "a longer one" and "exactly eight chars": 5 and 5 tokens
  const auto bad = test::run(test::clipper_bin() + " data stats '" + d.file("none-{0..1}.tar") +
                             "' --progress-every 0");
  EXPECT_EQ(bad.exit_code, 0) << bad.output;
  EXPECT_NE(bad.output.find("2 unreadable"), std::string::npos) << bad.output;
}

TEST(Progress, LineHasRateCountsAndEta) {
  core::Progress p("job", 1000, "items", 0.0);
  EXPECT_FALSE(p.due());  // every_s 0: never prints
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const std::string l = p.line(250, "1 shards done");
  EXPECT_EQ(l.rfind("job: 250 / 1,000 items (25.0 %), ", 0), 0u) << l;
  EXPECT_NE(l.find(" items/s, 1 shards done, ETA "), std::string::npos) << l;
  EXPECT_EQ(core::format_duration(3725), "1h02m");
  EXPECT_EQ(core::format_duration(65), "1m05s");
  EXPECT_EQ(core::group_digits(1234567), "1,234,567");
  core::Progress q("job", -1, "items", 1e-9);
  EXPECT_TRUE(q.due());
  EXPECT_EQ(q.line(5).find("ETA"), std::string::npos);
}
