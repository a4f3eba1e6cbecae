// The loader's regions (data.regions_key, docs/data.md "Regions"): each sample's boxes as its
// picture shows them, in batch order, through the shuffle and a mid-epoch resume; samples
// without regions counted; an invalid regions json a bad sample named in the error.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <map>
#include <optional>

#include "clipper/core/error.hpp"
#include "clipper/data/image.hpp"
#include "clipper/data/loader.hpp"
#include "clipper/data/regions.hpp"
#include "fixtures.hpp"
#include "test_util.hpp"

using namespace clipper;
using clipper::test::TempDir;

namespace {

// Stored pictures: wider than tall (the evaluation window cuts the sides), with room for
// RandomResizedCrop's draws (scale 0.9-1, ratio 3/4-4/3) to differ by a few pixels.
constexpr int kW = 48, kH = 40;

// A black picture with a white rectangle at (x0, y0)-(x1, y1) (pixels, exclusive ends), as PNG.
std::string picture(int x0, int y0, int x1, int y1) {
  cv::Mat m(kH, kW, CV_8UC3, cv::Scalar(0, 0, 0));
  cv::rectangle(m, cv::Rect(x0, y0, x1 - x0, y1 - y0), cv::Scalar(255, 255, 255), cv::FILLED);
  return test::encode(m, ".png");
}

// 16 samples in 2 shards: sample i has a white rectangle and, by i % 4: 0, 2 a region on it
// (phrase = its key; i % 8 == 2 at the left edge, 8 px wide: the evaluation window, source
// x 5..45, keeps under half of it), 1 no json member, 3 a json with an empty list.
struct Data {
  std::string pattern;
  std::map<std::string, std::string> json;  // key -> its json member (absent: none)
};

Data make_data(const std::string& dir, const std::string& bad_key = "") {
  data::ShardWriterOptions o;
  o.out_dir = dir;
  o.prefix = "r";
  o.samples_per_shard = 8;
  o.digits = 3;
  data::ShardWriter w(o);
  Data d;
  for (int i = 0; i < 16; ++i) {
    const std::string key = "k" + std::to_string(i);
    const int x0 = i % 8 == 2 ? 0 : 10 + i, y0 = 4 + i % 5, x1 = i % 8 == 2 ? 8 : x0 + 14,
              y1 = y0 + 12;
    std::vector<std::pair<std::string, std::string>> files{{"png", picture(x0, y0, x1, y1)},
                                                           {"txt", "caption " + key}};
    std::string js;
    if (i % 4 == 0 || i % 4 == 2) {
      const double b[4] = {double(x0) / kW, double(y0) / kH, double(x1) / kW, double(y1) / kH};
      nlohmann::json region = {{"box", b}, {"phrase", key}};
      js = nlohmann::json{{"regions", nlohmann::json::array({region})}}.dump();
    } else if (i % 4 == 3) {
      js = R"({"regions": []})";
    }
    if (key == bad_key)
      js = R"({"regions": [{"box": [0.1, 0.1, 0.2, 0.2], "phrase": "ok"},
                                            {"box": [0.5, 0.0, 0.2, 1.0], "phrase": "x"}]})";
    if (!js.empty()) {
      files.push_back({"json", js});
      d.json[key] = js;
    }
    w.write(key, files);
  }
  d.pattern = w.finish().pattern;
  return d;
}

data::LoaderOptions options(const std::string& pattern, bool train) {
  data::LoaderOptions o;
  o.shards = pattern;
  o.batch_size = 3;
  o.image_size = 16;
  o.workers = 2;
  o.train = train;
  o.sample_shuffle_buffer = 6;
  o.sample_shuffle_initial = 3;
  o.seed = 11;
  o.pin_memory = "off";
  o.regions_key = "json";
  return o;
}

auto tok() {
  return std::make_shared<test::ByteTokenizer>(16);
}

// The regions the key's json lists, as stored.
std::vector<data::Region> stored(const Data& d, const std::string& key) {
  const auto it = d.json.find(key);
  return it == d.json.end() ? std::vector<data::Region>{} : data::parse_regions(it->second, key);
}

void expect_same(const std::vector<data::Region>& got, const std::vector<data::Region>& want,
                 const std::string& key) {
  ASSERT_EQ(got.size(), want.size()) << key;
  for (std::size_t r = 0; r < got.size(); ++r) {
    EXPECT_EQ(got[r].phrase, want[r].phrase) << key;
    EXPECT_DOUBLE_EQ(got[r].x0, want[r].x0) << key;
    EXPECT_DOUBLE_EQ(got[r].y0, want[r].y0) << key;
    EXPECT_DOUBLE_EQ(got[r].x1, want[r].x1) << key;
    EXPECT_DOUBLE_EQ(got[r].y1, want[r].y1) << key;
  }
}

// One epoch's (key, regions) in delivery order.
using Seen = std::vector<std::pair<std::string, std::vector<data::Region>>>;
Seen rest_of_epoch(data::Loader& l, int batches = -1) {
  Seen seen;
  for (int n = 0; n != batches; ++n) {
    auto b = l.next();
    if (!b) break;
    const bool read = !l.options().regions_key.empty();
    EXPECT_EQ(b->regions.size(), read ? b->keys.size() : 0u);
    for (std::size_t s = 0; s < b->keys.size(); ++s)
      seen.push_back({b->keys[s], read ? b->regions[s] : std::vector<data::Region>{}});
  }
  return seen;
}

}  // namespace

// Evaluation transform (resize the shorter side, centre crop): each sample's regions are
// crop_regions of its stored ones on that window, whatever the order the workers deliver in; the
// count of samples without regions covers those whose only region the crop cut off.
TEST(LoaderRegions, EvaluationCropIsAppliedPerSampleInOrder) {
  TempDir dir;
  const Data d = make_data(dir.path().string());
  data::Loader l(options(d.pattern, false), tok());
  const auto g = data::eval_geometry(kW, kH, 16, model::ResizeMode::shortest);
  ASSERT_GT(g.left, 0);  // the window cuts the sides
  std::int64_t without = 0, with = 0;
  const Seen seen = rest_of_epoch(l);
  ASSERT_EQ(seen.size(), 16u);
  for (const auto& [key, regions] : seen) {
    const auto want = data::crop_regions(stored(d, key), g.resized_width, g.resized_height, g.left,
                                         g.top, 16, 16);
    expect_same(regions, want, key);
    (want.empty() ? without : with) += 1;
  }
  EXPECT_EQ(with, 6);      // i % 4 in {0, 2}, less the 2 near the left edge
  EXPECT_EQ(without, 10);  // 4 without a json, 4 with an empty list, 2 cut off
  EXPECT_EQ(l.counters().without_regions, without);
  EXPECT_EQ(l.counters().samples, 16);
  // The count travels in the loader state (cumulative, like the bad-data counters).
  EXPECT_EQ(data::BadDataCounters::from_json(l.state()["counters"]).without_regions, without);
}

// Training (RandomResizedCrop, shuffled): each box lands on its rectangle in the delivered picture
// (within the resize's blur), and follows its sample (phrase = key).
TEST(LoaderRegions, TrainingCropBoxesCoverTheirRectangleInThePicture) {
  TempDir dir;
  const Data d = make_data(dir.path().string());
  auto o = options(d.pattern, true);
  o.image_size = 32;
  data::Loader l(o, tok());
  int checked = 0, empty = 0;
  while (auto b = l.next()) {
    ASSERT_EQ(b->regions.size(), b->keys.size());
    for (std::size_t s = 0; s < b->keys.size(); ++s) {
      const auto& key = b->keys[s];
      ASSERT_LE(b->regions[s].size(), stored(d, key).size()) << key;
      if (b->regions[s].empty()) {
        ++empty;
        continue;
      }
      const auto& r = b->regions[s][0];
      EXPECT_EQ(r.phrase, key);
      // The white pixels' bounding box (grey > 127) in the 32 x 32 picture.
      const auto grey = b->images[static_cast<std::int64_t>(s)].to(at::kFloat).mean(-1);
      const auto white = (grey > 127).nonzero();
      ASSERT_GT(white.size(0), 0) << key;
      const double y0 = white.select(1, 0).min().item<double>(),
                   y1 = white.select(1, 0).max().item<double>() + 1,
                   x0 = white.select(1, 1).min().item<double>(),
                   x1 = white.select(1, 1).max().item<double>() + 1;
      EXPECT_NEAR(r.x0 * 32, x0, 1.0) << key;
      EXPECT_NEAR(r.x1 * 32, x1, 1.0) << key;
      EXPECT_NEAR(r.y0 * 32, y0, 1.0) << key;
      EXPECT_NEAR(r.y1 * 32, y1, 1.0) << key;
      ++checked;
    }
  }
  EXPECT_GE(checked, 6);  // all but perhaps the two at the edge
  EXPECT_EQ(l.counters().without_regions, empty);
}

// A mid-epoch resume delivers the rest of the epoch with the same regions as a straight run.
TEST(LoaderRegions, MidEpochResumeKeepsEachSamplesRegions) {
  TempDir dir;
  const Data d = make_data(dir.path().string());
  const auto o = options(d.pattern, true);
  data::Loader straight(o, tok());
  const Seen all = rest_of_epoch(straight);
  data::Loader first(o, tok());
  const Seen head = rest_of_epoch(first, 2);
  data::Loader resumed(o, tok());
  resumed.load_state(first.state());
  Seen got = head;
  for (auto& x : rest_of_epoch(resumed)) got.push_back(std::move(x));
  ASSERT_EQ(got.size(), all.size());
  for (std::size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(got[i].first, all[i].first);
    expect_same(got[i].second, all[i].second, all[i].first);
  }
  EXPECT_EQ(resumed.counters().without_regions, straight.counters().without_regions);
}

// An invalid regions list makes its sample bad (counted as bad_regions, named with its shard,
// key and entry); without data.regions_key the json is not read at all.
TEST(LoaderRegions, InvalidRegionsAreABadSampleNamedInTheError) {
  TempDir dir;
  const Data d = make_data(dir.path().string(), "k5");
  auto o = options(d.pattern, false);
  o.max_bad_fraction = 1.0;
  {
    data::Loader l(o, tok());
    const Seen seen = rest_of_epoch(l);
    for (const auto& [key, regions] : seen) EXPECT_NE(key, "k5");
    EXPECT_EQ(l.counters().bad_regions, 1);
    EXPECT_EQ(l.counters().bad_samples(), 1);
  }
  {
    auto plain = o;
    plain.regions_key.clear();
    data::Loader l(plain, tok());
    EXPECT_EQ(rest_of_epoch(l).size(), 16u);
    EXPECT_EQ(l.counters().bad_samples(), 0);
    EXPECT_EQ(l.counters().without_regions, 0);
  }
  o.max_bad_fraction = 0.0;
  o.bad_check_min_samples = 1;
  data::Loader l(o, tok());
  try {
    while (l.next()) {
    }
    FAIL() << "expected an error";
  } catch (const core::InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("sample 'k5'"), std::string::npos) << what;
    EXPECT_NE(what.find("r-000.tar"), std::string::npos) << what;
    EXPECT_NE(what.find("regions[1]"), std::string::npos) << what;
    EXPECT_NE(what.find("x0 <= x1"), std::string::npos) << what;
  }
}

TEST(LoaderRegions, RegionsKeyComesFromTheConfigAndIsChecked) {
  config::DataConfig c;
  c.train_shards = "x.tar";
  c.regions_key = "json";
  EXPECT_EQ(data::LoaderOptions::from_config(c, 4, 16, 0, 1, 0).regions_key, "json");
  TempDir dir;
  const Data d = make_data(dir.path().string());
  for (const std::string bad : {"json:regions", "png"}) {
    auto o = options(d.pattern, false);
    o.regions_key = bad;
    try {
      data::Loader l(o, tok());
      FAIL() << bad;
    } catch (const core::InputError& e) {
      EXPECT_NE(std::string(e.what()).find("data.regions_key"), std::string::npos) << e.what();
    }
  }
}
