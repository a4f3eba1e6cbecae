// Shard writing: folder, CSV/TSV and IDX inputs, sizes.json, and the `clipper shards` verb.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "clipper/core/error.hpp"
#include "clipper/data/image.hpp"
#include "clipper/data/shard_list.hpp"
#include "clipper/data/shard_writer.hpp"
#include "clipper/data/tar_stream.hpp"
#include "fixtures.hpp"
#include "test_util.hpp"

using namespace clipper;

namespace {
std::vector<data::RawSample> read_shards(const std::string& pattern) {
  std::vector<data::RawSample> v;
  for (const auto& url : data::expand_braces(pattern)) {
    data::ShardReader r(url);
    data::RawSample s;
    while (r.next(s)) v.push_back(s);
    EXPECT_EQ(r.status(), data::ShardStatus::ok) << url;
  }
  return v;
}

void write_idx(const std::string& images, const std::string& labels, int n, int rows, int cols) {
  auto be = [](std::ofstream& o, std::uint32_t v) {
    const unsigned char b[4] = {static_cast<unsigned char>(v >> 24),
                                static_cast<unsigned char>(v >> 16),
                                static_cast<unsigned char>(v >> 8), static_cast<unsigned char>(v)};
    o.write(reinterpret_cast<const char*>(b), 4);
  };
  std::ofstream im(images, std::ios::binary), lb(labels, std::ios::binary);
  be(im, 0x803);
  be(im, static_cast<std::uint32_t>(n));
  be(im, static_cast<std::uint32_t>(rows));
  be(im, static_cast<std::uint32_t>(cols));
  be(lb, 0x801);
  be(lb, static_cast<std::uint32_t>(n));
  for (int i = 0; i < n; ++i) {
    for (int p = 0; p < rows * cols; ++p) im.put(static_cast<char>((i * 20 + p) % 256));
    lb.put(static_cast<char>(i % 3));
  }
}
}  // namespace

TEST(ShardWriter, FolderOfImagesWithCaptions) {
  test::TempDir d;
  for (int i = 0; i < 5; ++i) {
    const std::string stem = "in/sub" + std::to_string(i % 2) + "/img" + std::to_string(i);
    d.write(stem + (i == 3 ? ".png" : ".jpg"),
            test::encode(test::test_image(300 + i, 200, i), i == 3 ? ".png" : ".jpg"));
    if (i != 4) d.write(stem + ".txt", "a picture number " + std::to_string(i) + "\n");
  }
  data::ShardWriterOptions o;
  o.out_dir = d.file("out");
  o.prefix = "train";
  o.samples_per_shard = 3;
  o.resize = 64;
  const auto r = data::shards_from_folder(d.file("in"), o);
  EXPECT_EQ(r.samples, 4);
  EXPECT_EQ(r.skipped, 1);  // img4 has no caption
  EXPECT_EQ(r.shards.size(), 2u);
  EXPECT_EQ(r.pattern, d.file("out/train-{00000..00001}.tar"));
  const auto l = data::parse_shard_list(r.pattern);
  EXPECT_EQ(l.total_size(), 4);
  const auto v = read_shards(r.pattern);
  ASSERT_EQ(v.size(), 4u);
  EXPECT_EQ(*v[0].find("txt"), "a picture number 0");
  int w = 0, h = 0;
  ASSERT_TRUE(data::peek_size(*v[2].find("jpg"), &w, &h));  // the PNG, re-encoded as JPEG
  EXPECT_EQ(h, 64);
  EXPECT_EQ(w, 96);
}

TEST(ShardWriter, CsvAndTsvTables) {
  test::TempDir d;
  d.write("img/a.jpg", test::jpeg_bytes(50, 40, 1));
  d.write("img/b.jpg", test::jpeg_bytes(50, 40, 2));
  d.write("t.csv",
          "id,filepath,title\n1,img/a.jpg,\"a cat, sitting\"\n2,img/b.jpg,\"say "
          "\"\"hi\"\"\"\n3,img/none.jpg,x\n");
  data::ShardWriterOptions o;
  o.out_dir = d.file("out");
  o.resize = 0;
  const auto r = data::shards_from_csv(d.file("t.csv"), "filepath", "title", ',', o);
  EXPECT_EQ(r.samples, 2);
  EXPECT_EQ(r.skipped, 1);
  const auto v = read_shards(r.pattern);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(*v[0].find("txt"), "a cat, sitting");
  EXPECT_EQ(*v[1].find("txt"), "say \"hi\"");
  EXPECT_EQ(*v[0].find("jpg"), test::jpeg_bytes(50, 40, 1));  // resize 0: JPEG bytes kept
  d.write("t.tsv", "filepath\ttitle\nimg/b.jpg\ta dog\n");
  o.out_dir = d.file("out2");
  const auto r2 = data::shards_from_csv(d.file("t.tsv"), "filepath", "title", '\t', o);
  EXPECT_EQ(r2.samples, 1);
  EXPECT_THROW(data::shards_from_csv(d.file("t.tsv"), "path", "title", '\t', o), core::InputError);
}

TEST(ShardWriter, IdxWithClassesTemplatesAndClsEntries) {
  test::TempDir d;
  write_idx(d.file("img-idx3-ubyte"), d.file("lab-idx1-ubyte"), 7, 28, 28);
  ASSERT_EQ(test::run("gzip " + d.file("img-idx3-ubyte")).exit_code, 0);  // one gzipped, one plain
  d.write("classes.yaml",
          "classes: [zero, one, two]\ntemplates: ['a photo of a {}.', 'a {} picture']\n");
  data::ShardWriterOptions o;
  o.out_dir = d.file("out");
  o.prefix = "train";
  o.samples_per_shard = 4;
  o.resize = 32;
  const auto r = data::shards_from_idx(d.file("img-idx3-ubyte.gz"), d.file("lab-idx1-ubyte"),
                                       d.file("classes.yaml"), o);
  EXPECT_EQ(r.samples, 7);
  EXPECT_EQ(r.shards.size(), 2u);
  const auto v = read_shards(r.pattern);
  ASSERT_EQ(v.size(), 7u);
  for (int i = 0; i < 7; ++i) {
    const std::string cls = *v[i].find("cls");
    EXPECT_EQ(cls, std::to_string(i % 3));
    const std::string name = std::vector<std::string>{"zero", "one", "two"}[i % 3];
    const std::string txt = *v[i].find("txt");
    EXPECT_TRUE(txt == "a photo of a " + name + "." || txt == "a " + name + " picture") << txt;
    int w = 0, h = 0;
    ASSERT_TRUE(data::peek_size(*v[i].find("jpg"), &w, &h));
    EXPECT_EQ(w, 32);
  }
  std::ifstream sj(d.file("out/sizes.json"));
  const auto j = nlohmann::json::parse(sj);
  EXPECT_EQ(j["train-00000.tar"], 4);
  EXPECT_EQ(j["train-00001.tar"], 3);
  // A second prefix in the same folder keeps the first one's sizes.
  o.prefix = "test";
  data::shards_from_idx(d.file("img-idx3-ubyte.gz"), d.file("lab-idx1-ubyte"),
                        d.file("classes.yaml"), o, 0, 2);
  EXPECT_EQ(data::parse_shard_list(d.file("out/train-{00000..00001}.tar")).total_size(), 7);
  EXPECT_EQ(data::parse_shard_list(d.file("out/test-00000.tar")).total_size(), 2);
  d.write("bad.yaml", "classes: [zero]\n");
  EXPECT_THROW(data::shards_from_idx(d.file("img-idx3-ubyte.gz"), d.file("lab-idx1-ubyte"),
                                     d.file("bad.yaml"), o),
               core::InputError);
}

TEST(ShardWriter, ShardsVerb) {
  test::TempDir d;
  write_idx(d.file("i"), d.file("l"), 5, 28, 28);
  d.write("c.yaml", "classes: [a, b, c]\n");
  const auto r = test::run(test::clipper_bin() + " shards " + d.file("out") + " --from-idx " +
                           d.file("i") + " " + d.file("l") + " --classes " + d.file("c.yaml") +
                           " --samples-per-shard 2 --resize 64 --prefix train");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("wrote 5 samples in 3 shard(s)"), std::string::npos) << r.output;
  EXPECT_EQ(data::parse_shard_list(d.file("out/train-{00000..00002}.tar")).total_size(), 5);
  const auto bad = test::run(test::clipper_bin() + " shards " + d.file("out") + " --from-idx " +
                             d.file("i") + " " + d.file("l"));
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("--classes"), std::string::npos) << bad.output;
  // The loader bench runs on them.
  const auto b =
      test::run(test::clipper_bin() + " bench loader " + d.file("out/train-{00000..00002}.tar") +
                " --threads 1 --batch 2 --size 32");
  EXPECT_EQ(b.exit_code, 0) << b.output;
  EXPECT_NE(b.output.find("samples/s"), std::string::npos) << b.output;
}

// An IDX header is untrusted: rows * cols * n overflowed 64 bits and passed the size check.
TEST(ShardWriter, IdxHeaderProductsAreOverflowChecked) {
  test::TempDir d;
  std::string img = std::string("\0\0\x08\x03\0\0\0\x01", 8) + std::string(8, '\xff') + "pixels";
  std::string lab = std::string("\0\0\x08\x01\0\0\0\x01", 8) + std::string(1, '\0');
  d.write("i", img);
  d.write("l", lab);
  d.write("classes.yaml", "classes: [zero]\n");
  data::ShardWriterOptions o;
  o.out_dir = d.file("out");
  const auto msg = test::error_of(
      [&] { data::shards_from_idx(d.file("i"), d.file("l"), d.file("classes.yaml"), o); });
  EXPECT_NE(msg.find("shorter than its header says"), std::string::npos) << msg;
}

namespace {
// The process's address space now, from /proc/self/status (VmSize, in KiB).
std::uint64_t address_space_bytes() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmSize:", 0) == 0) return std::stoull(line.substr(7)) * 1024;
  return 0;
}
}  // namespace

// Issue 25: `shards --from-idx` gunzipped a whole .gz before it looked at the magic number (1 GiB
// of zeros in 1 MB took 1.45 GB). The header comes first, and nothing past what it declares is
// decompressed: in a child with only 64 MiB of address space to spare, 128 MiB of zeros, bare or
// after a header of one 2x2 image, cost nothing.
TEST(ShardWriter, IdxGzipBombsAreReadHeaderFirst) {
  test::TempDir d;
  d.write("head", std::string("\0\0\x08\x03\0\0\0\x01\0\0\0\x02\0\0\0\x02", 16));
  const std::string zeros = "head -c 134217728 /dev/zero";
  ASSERT_EQ(test::run(zeros + " | gzip -1 > " + d.file("zeros.gz")).exit_code, 0);
  ASSERT_EQ(test::run("(cat " + d.file("head") + "; " + zeros + ") | gzip -1 > " + d.file("one.gz"))
                .exit_code,
            0);
  const auto child = [&] {
    const rlimit as{address_space_bytes() + (64u << 20), RLIM_INFINITY};
    setrlimit(RLIMIT_AS, &as);
    const auto bare = test::error_of([&] { data::read_idx_file(d.file("zeros.gz"), 0x803, 1); });
    const auto one = data::read_idx_file(d.file("one.gz"), 0x803, std::int64_t{1} << 40);
    const bool ok = bare.find(
                        "zeros.gz' is not an IDX file of unsigned-byte images (magic "
                        "0x00000803)") != std::string::npos &&
                    one.dims == std::vector<std::int64_t>({1, 2, 2}) &&
                    one.data == std::string(4, '\0');
    std::fprintf(stderr, "%s\n", ok ? "header first" : bare.c_str());
    std::exit(ok ? 0 : 1);
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "header first");
  // The configured maximum counts header and data; a short gzip is named short.
  auto msg = test::error_of([&] { data::read_idx_file(d.file("one.gz"), 0x803, 19); });
  EXPECT_NE(msg.find("declares 1 x 2 x 2 bytes of data, more than the limit of 19 bytes"),
            std::string::npos)
      << msg;
  EXPECT_EQ(data::read_idx_file(d.file("one.gz"), 0x803, 20).data.size(), 4u);
  ASSERT_EQ(test::run("gzip -c " + d.file("head") + " > " + d.file("short.gz")).exit_code, 0);
  msg = test::error_of([&] { data::read_idx_file(d.file("short.gz"), 0x803, 1 << 20); });
  EXPECT_NE(msg.find("short.gz' is shorter than its header says (1 x 2 x 2 bytes)"),
            std::string::npos)
      << msg;
  // Through the verb: the magic number's error, the file named.
  d.write("c.yaml", "classes: [a]\n");
  const auto r =
      test::run(test::clipper_bin() + " shards " + d.file("out") + " --from-idx " +
                d.file("zeros.gz") + " " + d.file("zeros.gz") + " --classes " + d.file("c.yaml"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("shards: '" + d.file("zeros.gz") + "' is not an IDX file"),
            std::string::npos)
      << r.output;
}

// --resize upscales smaller images as img2dataset does; --no-upscale keeps them at their size and
// still shrinks larger ones.
TEST(ShardWriter, NoUpscaleKeepsSmallerImagesAsTheyAre) {
  data::ShardWriterOptions o;
  o.resize = 64;
  const auto side = [&](int w, int h) {
    const std::string out = data::prepare_image(test::jpeg_bytes(w, h, 1), o, "img");
    data::ImageProcessor p(data::TransformSpec{}, 1 << 30);
    data::Image back;
    EXPECT_EQ(p.decode(out, &back, nullptr, false), data::ImageError::none);
    return std::min(back.width, back.height);
  };
  EXPECT_EQ(side(48, 40), 64);  // the default: upscaled
  o.no_upscale = true;
  EXPECT_EQ(side(48, 40), 40);    // kept
  EXPECT_EQ(side(200, 100), 64);  // still shrunk
}
