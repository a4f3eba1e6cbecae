// Tar streaming and WebDataset's grouping rule, plain, compressed and through pipe:.
#include <gtest/gtest.h>

#include <fstream>

#include "clipper/data/shard_writer.hpp"
#include "clipper/data/tar_stream.hpp"
#include "test_util.hpp"

using namespace clipper;

namespace {
std::vector<data::RawSample> read_all(const std::string& url, data::ShardStatus* st = nullptr) {
  data::ShardReader r(url);
  std::vector<data::RawSample> v;
  data::RawSample s;
  while (r.next(s)) v.push_back(s);
  if (st) *st = r.status();
  return v;
}
}  // namespace

TEST(TarStream, KeyRule) {
  std::string k, e;
  ASSERT_TRUE(data::split_key("dir/sub/000123.seg.JPG", &k, &e));
  EXPECT_EQ(k, "dir/sub/000123");
  EXPECT_EQ(e, "seg.jpg");
  ASSERT_TRUE(data::split_key("a.b/c.txt", &k, &e));  // dots in folders do not count
  EXPECT_EQ(k, "a.b/c");
  EXPECT_FALSE(data::split_key("dir/noext", &k, &e));
  EXPECT_FALSE(data::split_key("dir/.hidden", &k, &e));
}

TEST(TarStream, GroupsConsecutiveFilesByKeyFromTarCommand) {
  test::TempDir d;
  d.write("in/x/001.jpg", "J1");
  d.write("in/x/001.txt", "T1");
  d.write("in/x/002.jpg", "J2");
  d.write("in/x/002.cls", "3");
  d.write("in/x/002.txt", "T2");
  d.write("in/x/noext", "skip");
  const auto tar = d.file("s.tar");
  ASSERT_EQ(test::run("cd " + d.file("in") + " && tar --sort=name -cf " + tar + " x").exit_code, 0);
  data::ShardStatus st;
  auto v = read_all(tar, &st);
  EXPECT_EQ(st, data::ShardStatus::ok);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0].key, "x/001");
  ASSERT_TRUE(v[0].find("jpg"));
  EXPECT_EQ(*v[0].find("jpg"), "J1");
  EXPECT_EQ(*v[0].find("txt"), "T1");
  EXPECT_EQ(v[1].files.size(), 3u);
  EXPECT_EQ(*v[1].find("cls"), "3");
  // Compressed: gzip, and through a pipe.
  ASSERT_EQ(test::run("gzip -k " + tar).exit_code, 0);
  auto g = read_all(tar + ".gz", &st);
  EXPECT_EQ(st, data::ShardStatus::ok);
  ASSERT_EQ(g.size(), 2u);
  EXPECT_EQ(*g[1].find("txt"), "T2");
  auto p = read_all("pipe:cat " + tar + ".gz", &st);
  EXPECT_EQ(st, data::ShardStatus::ok);
  EXPECT_EQ(p.size(), 2u);
}

TEST(TarStream, DamagedInputsEndWithAStatus) {
  test::TempDir d;
  data::ShardStatus st;
  EXPECT_TRUE(read_all(d.file("missing.tar"), &st).empty());
  EXPECT_EQ(st, data::ShardStatus::unreadable);
  d.write("text.tar", std::string(3000, 'x'));
  EXPECT_TRUE(read_all(d.file("text.tar"), &st).empty());
  EXPECT_EQ(st, data::ShardStatus::unreadable);
  EXPECT_TRUE(read_all("pipe:exit 7", &st).empty());
  EXPECT_EQ(st, data::ShardStatus::pipe_failed);
  // Truncated inside the third sample's data: the first two survive.
  data::ShardWriterOptions o;
  o.out_dir = d.file("w");
  o.prefix = "t";
  data::ShardWriter w(o);
  w.write("a", {{"bin", std::string(1000, 'a')}, {"txt", "A"}});
  w.write("b", {{"bin", std::string(1000, 'b')}, {"txt", "B"}});
  w.write("c", {{"bin", std::string(20000, 'c')}, {"txt", "C"}});
  w.finish();
  const auto path = d.file("w/t-00000.tar");
  std::ifstream in(path, std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), {});
  all.resize(all.size() - 12000);
  std::ofstream(d.file("cut.tar"), std::ios::binary) << all;
  auto v = read_all(d.file("cut.tar"), &st);
  EXPECT_EQ(st, data::ShardStatus::truncated);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[1].key, "b");
  // A pipe that dies midway.
  auto pv = read_all("pipe:head -c 3000 " + path + "; exit 1", &st);
  EXPECT_EQ(st, data::ShardStatus::pipe_failed);
}

// Shards are untrusted: libarchive reads gzip, bzip2, xz and zstd with its own libraries and
// nothing else (before, every filter it has was on: lz4, lzip, uuencode, rpm, and external
// programs for the ones it lacks).
TEST(TarStream, OnlyGzipBzip2XzZstdFilters) {
  test::TempDir d;
  d.write("in/001.txt", "T1");
  const auto tar = d.file("s.tar");
  ASSERT_EQ(test::run("cd " + d.file("in") + " && tar -cf " + tar + " 001.txt").exit_code, 0);
  data::ShardStatus st;
  for (const char* tool : {"gzip", "bzip2", "xz", "zstd -q"}) {
    const auto out = d.file("s.tar.x");
    ASSERT_EQ(test::run(std::string(tool) + " -c " + tar + " > " + out).exit_code, 0) << tool;
    EXPECT_EQ(read_all(out, &st).size(), 1u) << tool;
    EXPECT_EQ(st, data::ShardStatus::ok) << tool;
  }
  for (const char* tool : {"lz4 -q", "lzma"}) {  // lzma: the legacy format, not xz
    const auto out = d.file("s.tar.y");
    if (test::run(std::string(tool) + " -c " + tar + " > " + out).exit_code != 0) continue;
    EXPECT_TRUE(read_all(out, &st).empty()) << tool;
    EXPECT_EQ(st, data::ShardStatus::unreadable) << tool;
  }
}

// A pipe: command that dies of a signal (other than the SIGPIPE our early close sends) failed,
// even when its output looked complete.
TEST(TarStream, PipeKilledBySignalFails) {
  test::TempDir d;
  d.write("in/001.txt", "T1");
  const auto tar = d.file("s.tar");
  ASSERT_EQ(test::run("cd " + d.file("in") + " && tar -cf " + tar + " 001.txt").exit_code, 0);
  data::ShardReader r("pipe:cat " + tar + "; kill -KILL $$");
  data::RawSample s;
  while (r.next(s)) {
  }
  EXPECT_EQ(r.status(), data::ShardStatus::pipe_failed);
  EXPECT_NE(r.error().find("signal 9"), std::string::npos) << r.error();
}

// A sample whose files together pass the byte limit comes without files, its bytes unread; the
// samples around it are whole (data.max_sample_bytes).
TEST(TarStream, SamplesOverTheByteLimitComeEmpty) {
  test::TempDir d;
  data::ShardWriterOptions o;
  o.out_dir = d.file("w");
  o.prefix = "t";
  data::ShardWriter w(o);
  w.write("a", {{"bin", std::string(400, 'a')}, {"txt", "A"}});
  w.write("b", {{"bin", std::string(600, 'b')}, {"jpg", std::string(600, 'b')}, {"txt", "B"}});
  w.write("c", {{"bin", std::string(900, 'c')}, {"txt", "C"}});
  w.finish();
  data::ShardReader r(d.file("w/t-00000.tar"), 1000);
  std::vector<data::RawSample> v;
  data::RawSample s;
  while (r.next(s)) v.push_back(s);
  EXPECT_EQ(r.status(), data::ShardStatus::ok);
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v[0].files.size(), 2u);
  EXPECT_EQ(v[1].key, "b");
  EXPECT_TRUE(v[1].files.empty());
  EXPECT_EQ(v[2].files.size(), 2u);
  EXPECT_EQ(v[2].bytes(), 1u + 3 + 900 + 3 + 1);
}
