// A sample's regions (docs/data.md "Regions") and LocCa's region-task sequences: the json format,
// its errors, the box quantization and the [prefix, target] token sequences.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "clipper/core/error.hpp"
#include "clipper/core/text.hpp"
#include "clipper/data/regions.hpp"
#include "clipper/tokenizer/tokenizer.hpp"

namespace {

namespace data = clipper::data;
using clipper::core::InputError;

// One id per space-separated word (start 1, end 2, padding 0), the open_clip layout.
class WordTokenizer : public clipper::tokenizer::Tokenizer {
 public:
  explicit WordTokenizer(std::int64_t ctx) : ctx_(ctx) {}
  void encode(std::string_view text, std::int64_t* out) const override {
    std::vector<std::int64_t> ids{1};
    for (const auto& w : clipper::core::split(std::string(text), ' '))
      if (!w.empty()) ids.push_back(id(w));
    ids.push_back(2);
    if (static_cast<std::int64_t>(ids.size()) > ctx_) {
      ids.resize(static_cast<std::size_t>(ctx_));
      ids.back() = 2;
    }
    ids.resize(static_cast<std::size_t>(ctx_), 0);
    std::copy(ids.begin(), ids.end(), out);
  }
  std::int64_t context_length() const override { return ctx_; }
  std::int64_t vocab_size() const override { return 1000; }
  static std::int64_t id(const std::string& w) {
    return 10 + static_cast<std::int64_t>(std::hash<std::string>{}(w) % 900);
  }

 private:
  std::int64_t ctx_;
};

std::string message_of(const std::string& json) {
  try {
    data::parse_regions(json, "shard-0.tar/s7");
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(Regions, ParseTheJsonFormat) {
  const auto r = data::parse_regions(
      R"({"caption": "two cars", "regions": [{"box": [0, 0.5, 0.25, 1], "phrase": "a red car"},
         {"box": [0.1, 0.2, 0.3, 0.4], "phrase": "a wheel"}]})",
      "s");
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].phrase, "a red car");
  EXPECT_EQ(r[0].y0, 0.5);
  EXPECT_EQ(r[0].x1, 0.25);
  EXPECT_EQ(r[1].y1, 0.4);
  // Absent, null or empty: no regions.
  EXPECT_TRUE(data::parse_regions(R"({"caption": "x"})", "s").empty());
  EXPECT_TRUE(data::parse_regions(R"({"regions": null})", "s").empty());
  EXPECT_TRUE(data::parse_regions(R"({"regions": []})", "s").empty());
}

TEST(Regions, MistakesNameTheSampleAndEntry) {
  EXPECT_NE(message_of("{not json").find("shard-0.tar/s7"), std::string::npos);
  EXPECT_NE(message_of(R"({"regions": {"box": 1}})").find("must be a list"), std::string::npos);
  const auto three = message_of(R"({"regions": [{"box": [0, 0, 1], "phrase": "p"}]})");
  EXPECT_NE(three.find("regions[0]"), std::string::npos) << three;
  EXPECT_NE(three.find("4 numbers"), std::string::npos) << three;
  const auto pixels = message_of(
      R"({"regions": [{"box": [0, 0, 1, 1], "phrase": "p"}, {"box": [0, 0, 20, 30], "phrase": "q"}]})");
  EXPECT_NE(pixels.find("regions[1]"), std::string::npos) << pixels;
  EXPECT_NE(pixels.find("in [0, 1]"), std::string::npos) << pixels;
  EXPECT_NE(
      message_of(R"({"regions": [{"box": [0.5, 0, 0.4, 1], "phrase": "p"}]})").find("x0 <= x1"),
      std::string::npos);
  EXPECT_NE(message_of(R"({"regions": [{"box": [0, 0, 1, 1], "phrase": ""}]})").find("phrase"),
            std::string::npos);
  EXPECT_NE(message_of(R"({"regions": [{"box": [0, 0, 1, 1]}]})").find("phrase"),
            std::string::npos);
}

TEST(Regions, BoxesQuantizeToLoccaBins) {
  const auto full = data::quantize_box(0, 0, 1, 1, 500);
  EXPECT_EQ(full.x0, 0);
  EXPECT_EQ(full.y0, 0);
  EXPECT_EQ(full.x1, 499);
  EXPECT_EQ(full.y1, 499);
  const auto mid = data::quantize_box(0.25, 0.1, 0.5, 1.2, 101);  // 1.2 clamps to 1
  EXPECT_EQ(mid.x0, 25);
  EXPECT_EQ(mid.y0, 10);
  EXPECT_EQ(mid.x1, 50);
  EXPECT_EQ(mid.y1, 100);
  EXPECT_THROW(data::quantize_box(0.6, 0, 0.5, 1, 500), InputError);
  EXPECT_THROW(data::quantize_box(0, NAN, 0.5, 1, 500), InputError);
  EXPECT_THROW(data::quantize_box(0, 0, 1, 1, 1), InputError);
}

TEST(Regions, CropMovesClipsAndDropsBoxes) {
  // A 200 x 100 picture cropped to its right half (x 100..200, all rows).
  const std::vector<data::Region> rs{
      {0.6, 0.2, 0.8, 0.6, "inside"},      // x 120..160 -> 0.2..0.6 of the crop
      {0.4, 0.0, 0.7, 1.0, "straddles"},   // x 80..140: 40 of 60 px inside (2/3) -> kept, clipped
      {0.3, 0.0, 0.6, 1.0, "mostly out"},  // x 60..120: 20 of 60 px inside (1/3) -> dropped
      {0.1, 0.1, 0.2, 0.2, "outside"}};
  const auto c = data::crop_regions(rs, 200, 100, 100, 0, 100, 100);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].phrase, "inside");
  EXPECT_NEAR(c[0].x0, 0.2, 1e-12);
  EXPECT_NEAR(c[0].x1, 0.6, 1e-12);
  EXPECT_NEAR(c[0].y0, 0.2, 1e-12);
  EXPECT_NEAR(c[0].y1, 0.6, 1e-12);
  EXPECT_EQ(c[1].phrase, "straddles");
  EXPECT_NEAR(c[1].x0, 0.0, 1e-12);
  EXPECT_NEAR(c[1].x1, 0.4, 1e-12);
  // The whole picture as the crop changes nothing.
  const auto same = data::crop_regions(rs, 200, 100, 0, 0, 200, 100);
  ASSERT_EQ(same.size(), rs.size());
  EXPECT_NEAR(same[2].x1, 0.6, 1e-12);
  // A lower threshold keeps the one third.
  EXPECT_EQ(data::crop_regions(rs, 200, 100, 100, 0, 100, 100, 0.3).size(), 3u);
}

TEST(Regions, TaskSequencesPredictOnlyTheTarget) {
  const WordTokenizer tok(16);
  const data::Region r{0.0, 0.5, 0.25, 1.0, "a car"};
  auto id = WordTokenizer::id;
  // aref: [start] "aref:" "a" "car" ":" | "0" "250" "125" "499" [end] (500 bins)
  const auto aref = data::region_task_sequence(tok, data::RegionTask::aref, r, 500);
  const std::vector<std::int64_t> want_aref{
      1,         id("aref:"), id("a"), id("car"), id(":"), id("0"), id("250"), id("125"),
      id("499"), 2,           0,       0,         0,       0,       0,         0};
  EXPECT_EQ(aref.tokens, want_aref);
  EXPECT_EQ(aref.target_start, 5);
  // gcap: [start] "gcap:" "0" "250" "125" "499" ":" | "a" "car" [end]
  const auto gcap = data::region_task_sequence(tok, data::RegionTask::gcap, r, 500);
  EXPECT_EQ(gcap.target_start, 7);
  EXPECT_EQ(gcap.tokens[7], id("a"));
  EXPECT_EQ(gcap.tokens[8], id("car"));
  EXPECT_EQ(gcap.tokens[9], 2);
  // A prefix that fills the context leaves no target.
  const WordTokenizer short_tok(6);
  const auto cut = data::region_task_sequence(short_tok, data::RegionTask::gcap, r, 500);
  EXPECT_EQ(cut.target_start, 6);
}

TEST(Regions, BatchPicksOneRegionPerSampleAndCountsTheRest) {
  const WordTokenizer tok(16);
  const std::string long_phrase = "a b c d e f g h i j k l m n o p";  // fills the context
  const std::vector<std::vector<data::Region>> samples{
      {{0.0, 0.0, 0.5, 0.5, "a cat"}, {0.5, 0.5, 1.0, 1.0, "a dog"}},
      {},
      {{0.2, 0.2, 0.4, 0.4, "a bird"}},
      {{0.2, 0.2, 0.4, 0.4, long_phrase}}};
  const auto b = data::make_region_batch(samples, tok, 500, 7, 0);
  EXPECT_EQ(b.without_regions, 1);
  EXPECT_EQ(b.no_room, 1);
  ASSERT_EQ(b.rows.numel(), 2);
  EXPECT_EQ(b.rows[0].item<std::int64_t>(), 0);
  EXPECT_EQ(b.rows[1].item<std::int64_t>(), 2);
  ASSERT_EQ(b.aref_tokens.sizes(), (std::vector<std::int64_t>{2, 16}));
  // Row 1 is sample 2's only region, as region_task_sequence makes it.
  const auto want = data::region_task_sequence(tok, data::RegionTask::gcap, samples[2][0], 500);
  for (std::int64_t j = 0; j < 16; ++j)
    EXPECT_EQ(b.gcap_tokens[1][j].item<std::int64_t>(), want.tokens[static_cast<std::size_t>(j)]);
  EXPECT_EQ(b.gcap_start[1].item<std::int64_t>(), want.target_start);
  // The pick is a function of (seed, step, row): repeatable, and over steps both of sample 0's
  // regions come up.
  const auto again = data::make_region_batch(samples, tok, 500, 7, 0);
  EXPECT_TRUE(at::equal(again.aref_tokens, b.aref_tokens));
  const auto cat = data::region_task_sequence(tok, data::RegionTask::aref, samples[0][0], 500);
  int cats = 0;
  for (std::int64_t step = 0; step < 40; ++step) {
    const auto s = data::make_region_batch(samples, tok, 500, 7, step);
    cats += s.aref_tokens[0][3].item<std::int64_t>() == cat.tokens[3];  // "cat" or "dog"
  }
  EXPECT_GT(cats, 5);
  EXPECT_LT(cats, 35);
  // No regions anywhere: an empty batch.
  EXPECT_TRUE(data::make_region_batch({{}, {}}, tok, 500, 7, 0).empty());
}

}  // namespace
