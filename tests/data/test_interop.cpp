// Interop with the Python `webdataset` package: shards it writes are read by clipper with the same
// samples, and shards clipper writes are read by it.
#include <gtest/gtest.h>
#include <cstdio>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "clipper/core/atomic_file.hpp"
#include "clipper/data/image.hpp"
#include "clipper/data/loader.hpp"
#include "clipper/data/shard_list.hpp"
#include "clipper/data/shard_writer.hpp"
#include "clipper/data/tar_stream.hpp"
#include "fixtures.hpp"
#include "test_util.hpp"

using namespace clipper;

namespace {
// FNV-1a 64 as hex (wds_interop.py computes the same).
std::string fnv_hex(const std::string& s) {
  std::uint64_t h = 0xCBF29CE484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ULL;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}
std::string helper() {
  return test::source_path("tests/data/wds_interop.py");
}
}  // namespace

TEST(Interop, ClipperReadsShardsWrittenByWebdataset) {
  test::TempDir d;
  const auto w =
      test::run(test::python() + " " + helper() + " write " + d.path().string() + " 25 10");
  ASSERT_EQ(w.exit_code, 0) << w.output;
  const auto manifest = nlohmann::json::parse(w.output);
  ASSERT_EQ(manifest.size(), 25u);
  // Raw samples: same keys, captions and image bytes, in order.
  std::vector<data::RawSample> got;
  for (const auto& url : data::expand_braces(d.file("wds-{00000..00002}.tar"))) {
    data::ShardReader r(url);
    data::RawSample s;
    while (r.next(s)) got.push_back(s);
    EXPECT_EQ(r.status(), data::ShardStatus::ok) << url;
  }
  ASSERT_EQ(got.size(), 25u);
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].key, manifest[i]["key"].get<std::string>());
    ASSERT_TRUE(got[i].find("txt"));
    EXPECT_EQ(*got[i].find("txt"), manifest[i]["txt"].get<std::string>());
    EXPECT_EQ(fnv_hex(*got[i].find("jpg")), manifest[i]["jpg_fnv"].get<std::string>());
  }
  // The loader, with the caption from the json field: every sample once, tokens of its caption.
  data::LoaderOptions o;
  o.shards = d.file("wds-{00000..00002}.tar");
  o.num_samples = 25;
  o.batch_size = 5;
  o.image_size = 24;
  o.workers = 1;  // 3 shards without sizes.json: shard-level split
  o.text_key = "json:caption";
  o.pin_memory = "off";
  data::Loader l(o, std::make_shared<test::ByteTokenizer>(64));
  std::map<std::string, std::string> caption;
  for (const auto& m : manifest) caption[m["key"]] = m["txt"];
  std::set<std::string> seen;
  while (auto b = l.next()) {
    for (std::size_t i = 0; i < b->keys.size(); ++i) {
      EXPECT_TRUE(seen.insert(b->keys[i]).second) << b->keys[i];
      std::vector<std::int64_t> want(64);
      test::ByteTokenizer(64).encode(caption.at(b->keys[i]), want.data());
      EXPECT_TRUE(std::equal(want.begin(), want.end(),
                             b->tokens[static_cast<std::int64_t>(i)].data_ptr<std::int64_t>()));
    }
  }
  EXPECT_EQ(seen.size(), 25u);
  EXPECT_EQ(l.counters().bad_samples(), 0);
}

TEST(Interop, WebdatasetReadsShardsWrittenByClipper) {
  test::TempDir d;
  data::ShardWriterOptions o;
  o.out_dir = d.file("out");
  o.prefix = "c";
  o.samples_per_shard = 4;
  o.resize = 48;
  std::vector<std::string> hashes;
  {
    data::ShardWriter w(o);
    for (int i = 0; i < 10; ++i) {
      const std::string jpg = data::prepare_image(test::jpeg_bytes(100, 80, i), o, "test");
      hashes.push_back(fnv_hex(jpg));
      w.write(
          "k" + std::to_string(i),
          {{"jpg", jpg}, {"txt", "caption " + std::to_string(i)}, {"cls", std::to_string(i % 3)}});
    }
    const auto r = w.finish();
    EXPECT_EQ(r.pattern, d.file("out/c-{00000..00002}.tar"));
  }
  const auto r = test::run(test::python() + " " + helper() + " read '" +
                           d.file("out/c-{00000..00002}.tar") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::istringstream lines(r.output);
  std::string line;
  int i = 0;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] != '{') continue;
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["key"], "k" + std::to_string(i));
    EXPECT_EQ(j["txt"], "caption " + std::to_string(i));
    EXPECT_EQ(j["cls"], i % 3);
    EXPECT_EQ(j["jpg_fnv"], hashes[static_cast<std::size_t>(i)]);
    EXPECT_EQ(j["size"], nlohmann::json::array({60, 48}));
    ++i;
  }
  EXPECT_EQ(i, 10) << r.output;
}

// The training transform against PIL's crop + bicubic resize, which OpenCLIP's torchvision
// transforms run on PIL images (the same filter, a = -0.5, antialiased), and the evaluation
// transform against open_clip's own image_transform(S, is_train=False) (Resize, then CenterCrop):
// the pixels agree up to rounding.
TEST(Interop, TransformMatchesPillowBicubic) {
  test::TempDir d;
  const std::string jpg = test::jpeg_bytes(256, 240, 7, 95);
  const std::string path = d.file("photo.jpg");
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_TRUE(f);
    std::fwrite(jpg.data(), 1, jpg.size(), f);
    std::fclose(f);
  }
  struct Case {
    bool train;
    std::uint64_t seed;
    int size;
  };
  for (const Case c : {Case{true, 3, 224}, Case{true, 4, 224}, Case{false, 0, 224},
                       Case{true, 5, 216}, Case{false, 0, 212}}) {
    data::TransformSpec spec;
    spec.size = c.size;
    spec.train = c.train;
    data::ImageProcessor p(spec, 1 << 30);
    std::vector<std::uint8_t> out(static_cast<std::size_t>(c.size) * c.size * 3);
    ASSERT_EQ(p.process(jpg, c.seed, out.data(), nullptr), data::ImageError::none);
    const auto box = c.train ? data::random_resized_crop_box(256, 240, spec, c.seed)
                             : data::CropBox{0, 0, 256, 240};
    // Every case decodes at full size (no DCT-domain scaling, which is not PIL's path).
    ASSERT_LT(std::min(box.w, box.h) * 7 / 8, c.size);
    const std::string raw = d.file("pil.raw");
    // Evaluation: open_clip's own image_transform(S, is_train=False), up to the tensor.
    const std::string what = c.train ? std::to_string(box.x) + " " + std::to_string(box.y) + " " +
                                           std::to_string(box.w) + " " + std::to_string(box.h)
                                     : std::string("eval");
    const auto r =
        test::run(test::python() + " " + test::source_path("tests/data/pil_transform.py") + " " +
                  path + " " + what + " " + std::to_string(c.size) + " " + raw);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::FILE* f = std::fopen(raw.c_str(), "rb");
    ASSERT_TRUE(f);
    std::vector<std::uint8_t> ref(out.size());
    ASSERT_EQ(std::fread(ref.data(), 1, ref.size(), f), ref.size());
    std::fclose(f);
    double sum = 0;
    int worst = 0;
    for (std::size_t i = 0; i < out.size(); ++i) {
      const int diff = std::abs(static_cast<int>(out[i]) - static_cast<int>(ref[i]));
      sum += diff;
      worst = std::max(worst, diff);
    }
    const double mean = sum / static_cast<double>(out.size());
    EXPECT_LT(mean, 0.1) << "train=" << c.train << " seed=" << c.seed << " S=" << c.size;
    EXPECT_LE(worst, 2) << "train=" << c.train << " seed=" << c.seed << " S=" << c.size;
    std::printf("train=%d seed=%llu S=%d box=%dx%d: mean |diff| %.4f, max %d\n", c.train,
                static_cast<unsigned long long>(c.seed), c.size, box.w, box.h, mean, worst);
  }
}

// Every mode becomes the RGB that PIL gives under clipper's rule (image.hpp; docs/data.md): RGBA,
// palette with transparency, LA, L, 16-bit RGB and grey PNGs, a CMYK JPEG and a JPEG with an
// EXIF orientation (ignored, as PIL.Image.open and open_clip's preprocess do), each composited
// over white, black and #3366cc and with the alpha dropped (PIL's convert("RGB")). Checked on the
// full decode (the shard writer's path) and on the evaluation transform (the loader's and embed's
// path; the centre square at its own size, so no resize).
TEST(Interop, EveryImageModeBecomesPillowsRgbUnderTheTransparencyRule) {
  test::TempDir d;
  const auto r = test::run(test::python() + " " + test::source_path("tests/data/image_modes.py") +
                           " " + d.file("img"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto listing = nlohmann::json::parse(r.output.substr(r.output.find('[')));
  ASSERT_EQ(listing.size(), 8u);
  for (const char* rule : {"white", "black", "#3366cc", "drop"}) {
    std::string tag = rule;
    if (tag[0] == '#') tag = "hex" + tag.substr(1);
    data::TransformSpec ts;
    ts.transparency = data::parse_transparency(rule, "test");
    for (const auto& item : listing) {
      const std::string name = item["name"], file = item["file"];
      const int w = item["width"], h = item["height"];
      const bool jpeg = file.substr(file.size() - 4) == ".jpg";
      const auto want = core::read_file(d.file("img/" + name + "." + tag + ".rgb"));
      data::Image img;
      std::string why;
      data::ImageProcessor full(ts, 1 << 20);
      ASSERT_EQ(full.decode(core::read_file(file), &img, &why), data::ImageError::none) << why;
      ASSERT_EQ(img.width, w) << name;
      ASSERT_EQ(img.height, h) << name;
      ASSERT_EQ(img.channels, 3) << name;
      ASSERT_EQ(img.pixels.size(), want.size()) << name;
      int worst = 0;
      for (std::size_t i = 0; i < want.size(); ++i)
        worst = std::max(worst, std::abs(int(img.pixels[i]) - int(std::uint8_t(want[i]))));
      // PNG: bit for bit. JPEG: PIL's libjpeg-turbo may round an IDCT step differently.
      EXPECT_LE(worst, jpeg ? 1 : 0) << name << " under " << rule;
      // The evaluation transform: the centre square, here at its own size.
      ts.size = std::min(w, h);
      ts.train = false;
      data::ImageProcessor eval(ts, 1 << 20);
      std::vector<std::uint8_t> out(static_cast<std::size_t>(ts.size) * ts.size * 3);
      ASSERT_EQ(eval.process(core::read_file(file), 0, out.data(), &why), data::ImageError::none);
      const auto rc = data::resize_then_center_crop(w, h, ts.size);
      int worst_eval = 0;
      for (int y = 0; y < ts.size; ++y)
        for (int x = 0; x < ts.size * 3; ++x) {
          const auto got = out[static_cast<std::size_t>(y * ts.size * 3 + x)];
          const auto ref =
              std::uint8_t(want[static_cast<std::size_t>((rc.top + y) * w * 3 + rc.left * 3 + x)]);
          worst_eval = std::max(worst_eval, std::abs(int(got) - int(ref)));
        }
      EXPECT_LE(worst_eval, jpeg ? 1 : 0) << name << " (evaluation transform) under " << rule;
    }
  }
  EXPECT_EQ(listing[7]["orientation"], 6);  // the rotated JPEG does carry the tag
}

TEST(Interop, TransparencyValuesAreCheckedAndSpelledBack) {
  EXPECT_EQ(data::transparency_name(data::parse_transparency("white", "k")), "white");
  EXPECT_EQ(data::transparency_name(data::parse_transparency("drop", "k")), "drop");
  EXPECT_EQ(data::transparency_name(data::parse_transparency("openclip", "k")), "openclip");
  EXPECT_EQ(data::transparency_name(data::parse_transparency("#3366CC", "k")), "#3366cc");
  const auto msg = test::error_of([] { data::parse_transparency("blue", "data.transparency"); });
  EXPECT_NE(msg.find("data.transparency is 'blue'; expected white, black, #RRGGBB"),
            std::string::npos)
      << msg;
}

// The model's preprocess_cfg in the evaluation transform (embed, the eval loader): each resize
// mode (shortest, longest with black padding, squash) and filter (bicubic, bilinear) against
// open_clip's own image_transform(S, is_train=False, resize_mode, interpolation) on non-square
// PNGs, one shrunk (150 x 97), one enlarged (45 x 70); and each transparency rule against the tool
// it names on an RGBA icon: drop = open_clip's transform on convert("RGB") (open_clip_train's
// loaders), openclip = open_clip's transform on the RGBA picture itself (alpha dropped after the
// resize), white = open_clip's transform on the picture composited over white (transformers'
// convert_to_rgb). Mean |difference| at most 1 level (printed per case), at most 2 anywhere
// (openclip: 16, below).
TEST(Interop, EvalTransformMatchesOpenClipPerResizeModeAndFilter) {
  test::TempDir d;
  const int S = 64;
  const auto r =
      test::run(test::python() + " " + test::source_path("tests/data/eval_transform.py") + " " +
                d.file("img") + " " + std::to_string(S));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto listing = nlohmann::json::parse(r.output.substr(r.output.find('[')));
  ASSERT_EQ(listing.size(), 30u);
  const std::map<std::string, std::string> rule_of = {
      {"rgb", "drop"}, {"keep", "openclip"}, {"white", "white"}};
  for (const auto& item : listing) {
    const std::string mode = item["mode"], filter = item["interpolation"], alpha = item["alpha"];
    data::TransformSpec ts;
    ts.size = S;
    ts.train = false;
    ts.resize_mode = *model::parse_resize_mode(mode);
    ts.interpolation = *model::parse_interpolation(filter);
    ts.transparency = data::parse_transparency(rule_of.at(alpha), "test");
    data::ImageProcessor p(ts, 1 << 20);
    std::vector<std::uint8_t> out(static_cast<std::size_t>(S) * S * 3);
    std::string why;
    ASSERT_EQ(p.process(core::read_file(d.file("img/" + item["picture"].get<std::string>())), 0,
                        out.data(), &why),
              data::ImageError::none)
        << why;
    const auto want = core::read_file(d.file("img/" + item["file"].get<std::string>()));
    ASSERT_EQ(want.size(), out.size());
    double sum = 0;
    int worst = 0;
    for (std::size_t i = 0; i < out.size(); ++i) {
      const int diff = std::abs(int(out[i]) - int(std::uint8_t(want[i])));
      sum += diff;
      worst = std::max(worst, diff);
    }
    const double mean = sum / static_cast<double>(out.size());
    const std::string what = item["picture"].get<std::string>() + " " + mode + " " + filter +
                             " transparency " + rule_of.at(alpha);
    std::printf("%s: mean |diff| %.4f, max %d\n", what.c_str(), mean, worst);
    EXPECT_LE(mean, 1.0) << what;
    // openclip divides the resized colour by the resized alpha (PIL's RGBa -> RGBA): one level of
    // the premultiplied resize becomes up to 255 / alpha levels where alpha is small.
    EXPECT_LE(worst, alpha == "keep" ? 16 : 2) << what;
  }
}
