// The loader: every sample once per epoch across ranks x workers, a deterministic stream, exact
// resume, resampled mode, and bad data counted without a crash or a hang.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>

#include "budget.hpp"
#include "clipper/core/error.hpp"
#include "clipper/data/loader.hpp"
#include "clipper/model/naflex_size.hpp"
#include "fixtures.hpp"
#include "loader_state.hpp"
#include "shuffle_buffer.hpp"
#include "test_util.hpp"
#include "worker.hpp"

using namespace clipper;
using clipper::test::TempDir;

namespace {

auto tok() {
  return std::make_shared<test::ByteTokenizer>(16);
}

data::LoaderOptions base(const std::string& pattern) {
  data::LoaderOptions o;
  o.shards = pattern;
  o.batch_size = 4;
  o.image_size = 16;
  o.workers = 2;
  o.sample_shuffle_buffer = 8;
  o.sample_shuffle_initial = 4;
  o.shard_shuffle_buffer = 100;
  o.seed = 7;
  o.pin_memory = "off";
  return o;
}

// One record per next() call: a batch (keys + checksums) or an epoch end (epoch = -1).
struct Rec {
  std::vector<std::string> keys;
  std::int64_t epoch = -1, index = -1;
  std::uint64_t img = 0, tok = 0;
  bool operator==(const Rec& o) const {
    return keys == o.keys && epoch == o.epoch && index == o.index && img == o.img && tok == o.tok;
  }
};

std::uint64_t fnv(const void* p, std::size_t n) {
  std::uint64_t h = 1469598103934665603ULL;
  const auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ULL;
  return h;
}

Rec record(const std::optional<data::Batch>& b) {
  Rec r;
  if (!b) return r;
  r.keys = b->keys;
  r.epoch = b->epoch;
  r.index = b->index_in_epoch;
  r.img = fnv(b->images.data_ptr(), b->images.nbytes());
  r.tok = fnv(b->tokens.data_ptr(), b->tokens.nbytes());
  return r;
}

std::vector<Rec> take(data::Loader& l, int calls) {
  std::vector<Rec> v;
  for (int i = 0; i < calls; ++i) v.push_back(record(l.next()));
  return v;
}

std::vector<std::string> epoch_keys(data::Loader& l) {
  std::vector<std::string> keys;
  while (auto b = l.next()) keys.insert(keys.end(), b->keys.begin(), b->keys.end());
  return keys;
}

}  // namespace

TEST(Loader, BatchShapesTokensAndLayout) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 2, 5);
  auto o = base(pat);
  o.workers = 1;
  data::Loader l(o, tok());
  EXPECT_EQ(l.dataset_size(), 10);
  EXPECT_EQ(l.batches_per_epoch(), 3);
  auto b = l.next();
  ASSERT_TRUE(b);
  EXPECT_EQ(b->images.sizes(), (std::vector<std::int64_t>{4, 16, 16, 3}));
  EXPECT_EQ(b->images.scalar_type(), at::kByte);
  EXPECT_EQ(b->tokens.sizes(), (std::vector<std::int64_t>{4, 16}));
  EXPECT_EQ(b->tokens.scalar_type(), at::kLong);
  std::vector<std::int64_t> want(16);
  test::ByteTokenizer(16).encode("caption " + b->keys[0], want.data());
  const auto* t = b->tokens.data_ptr<std::int64_t>();
  EXPECT_TRUE(std::equal(want.begin(), want.end(), t));
  // Real pixels: the gradient images are not flat.
  EXPECT_GT(b->images[0].to(at::kFloat).std().item<double>(), 10.0);
  ASSERT_TRUE(l.next());
  auto last = l.next();
  ASSERT_TRUE(last);
  EXPECT_EQ(last->images.size(0), 2);  // 10 = 4 + 4 + 2
  EXPECT_FALSE(l.next());              // end of epoch 0
  auto e1 = l.next();
  ASSERT_TRUE(e1);
  EXPECT_EQ(e1->epoch, 1);
  EXPECT_EQ(e1->index_in_epoch, 0);
}

// NaFlex (issue 28): each sample is its picture's patches at its own aspect ratio under the token
// budget (the grid from naflex_image_size), zeros after them; training crops first.
TEST(Loader, NaflexBatchesArePatchesWithTheirGrids) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 1, 4, true, "d", 64, 24);
  auto o = base(pat);
  o.workers = 1;
  o.train = false;
  o.naflex_patch = 8;
  o.naflex_max_tokens = 12;
  data::Loader l(o, tok());
  auto b = l.next();
  ASSERT_TRUE(b);
  EXPECT_EQ(b->images.sizes(), (std::vector<std::int64_t>{4, 12, 8 * 8 * 3}));
  ASSERT_TRUE(b->grids.defined());
  EXPECT_EQ(b->grids.sizes(), (std::vector<std::int64_t>{4, 2}));
  for (std::int64_t i = 0; i < 4; ++i) {
    // make_dataset's sample i is (64 + i % 5) x 24 pixels (width x height).
    const auto [h, w] = model::naflex_image_size(24, 64 + i, 8, 12);
    const auto rows = b->grids[i][0].item<std::int64_t>(),
               cols = b->grids[i][1].item<std::int64_t>();
    EXPECT_EQ(rows * 8, h) << i;
    EXPECT_EQ(cols * 8, w) << i;
    EXPECT_GT(cols, rows) << "a wide picture stays wide, sample " << i;
    EXPECT_GT(b->images[i].narrow(0, 0, rows * cols).to(at::kFloat).std().item<double>(), 10.0);
    EXPECT_EQ(b->images[i].narrow(0, rows * cols, 12 - rows * cols).sum().item<std::int64_t>(), 0);
  }
  o.train = true;
  data::Loader t(o, tok());
  auto tb = t.next();
  ASSERT_TRUE(tb);
  const auto n = tb->grids.select(1, 0) * tb->grids.select(1, 1);
  EXPECT_LE(n.max().item<std::int64_t>(), 12);
  EXPECT_GE(n.min().item<std::int64_t>(), 1);
}

TEST(Loader, EverySampleOncePerEpochAcrossRanksAndWorkers) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 6, 10, true, "d", 12, 10);  // 60 samples
  std::set<std::string> all;
  for (int s = 0; s < 6; ++s)
    for (int i = 0; i < 10; ++i) all.insert("s" + std::to_string(s) + "_" + std::to_string(i));
  for (int W : {1, 2, 4})
    for (int K = 1; K <= 4; ++K) {
      for (int epoch = 0; epoch < 2; ++epoch) {
        std::multiset<std::string> seen;
        std::vector<std::string> first_rank0;
        for (int r = 0; r < W; ++r) {
          auto o = base(pat);
          o.world_size = W;
          o.rank = r;
          o.workers = K;
          data::Loader l(o, tok());
          if (epoch == 1) {
            while (l.next()) {
            }
          }
          std::int64_t batches = 0;
          while (auto b = l.next()) {
            ++batches;
            EXPECT_EQ(b->epoch, epoch);
            seen.insert(b->keys.begin(), b->keys.end());
          }
          EXPECT_EQ(batches, l.batches_per_epoch()) << "W=" << W << " K=" << K << " r=" << r;
        }
        EXPECT_EQ(seen.size(), all.size()) << "W=" << W << " K=" << K;
        EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()), all) << "W=" << W << " K=" << K;
      }
    }
}

TEST(Loader, ShardLevelSplitWithoutSizes) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 8, 8, /*sizes=*/false, "d", 12, 10);
  auto o = base(pat);
  o.num_samples = 64;
  o.world_size = 2;
  o.workers = 2;
  std::multiset<std::string> seen;
  for (int r = 0; r < 2; ++r) {
    o.rank = r;
    data::Loader l(o, tok());
    EXPECT_EQ(l.samples_per_epoch(), 32);
    for (auto& k : epoch_keys(l)) seen.insert(k);
  }
  EXPECT_EQ(seen.size(), 64u);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 64u);
  // Too few shards for the layout without sizes.json: a clear error.
  o.world_size = 4;
  o.workers = 3;
  o.rank = 0;
  try {
    data::Loader l(o, tok());
    FAIL() << "expected an error";
  } catch (const core::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("sizes.json"), std::string::npos) << e.what();
  }
}

TEST(Loader, UnevenSplitRepeatsTheFewestSamples) {
  TempDir d;
  const auto pat =
      test::make_dataset(d.path().string(), 3, 7, true, "d", 12, 10);  // 21 samples, 2 ranks
  std::multiset<std::string> seen;
  std::int64_t repeated = 0;
  for (int r = 0; r < 2; ++r) {
    auto o = base(pat);
    o.world_size = 2;
    o.rank = r;
    o.workers = 2;
    data::Loader l(o, tok());
    EXPECT_EQ(l.samples_per_epoch(), 11);
    for (auto& k : epoch_keys(l)) seen.insert(k);
    repeated += l.counters().repeated;
  }
  EXPECT_EQ(seen.size(), 22u);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 21u);
  EXPECT_EQ(repeated, 1);
}

TEST(Loader, StreamIsAPureFunctionOfSeedAndLayout) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 4, 9, true, "d", 20, 16);
  auto o = base(pat);
  o.workers = 3;
  std::vector<Rec> a, b, c;
  {
    data::Loader l(o, tok());
    a = take(l, 24);
  }
  {
    o.prefetch_batches = 1;  // other timing, same stream
    data::Loader l(o, tok());
    b = take(l, 24);
  }
  EXPECT_EQ(a, b);
  {
    o.seed = 8;
    data::Loader l(o, tok());
    c = take(l, 24);
  }
  EXPECT_NE(a, c);
  // Epochs differ in order but not in content.
  std::vector<std::string> e0, e1;
  bool second = false;
  for (auto& r : a) {
    if (r.epoch == -1) {
      if (second) break;
      second = true;
      continue;
    }
    (second ? e1 : e0).insert((second ? e1 : e0).end(), r.keys.begin(), r.keys.end());
  }
  EXPECT_NE(e0, e1);
  std::sort(e0.begin(), e0.end());
  std::sort(e1.begin(), e1.end());
  EXPECT_EQ(e0, e1);
}

namespace {
// Runs `calls` next() calls, saves, restores into a fresh loader and checks the rest of the stream.
void check_resume(const data::LoaderOptions& o, int total_calls,
                  const std::vector<int>& save_points) {
  std::vector<Rec> full;
  {
    data::Loader l(o, tok());
    full = take(l, total_calls);
  }
  for (int p : save_points) {
    nlohmann::json st;
    {
      data::Loader l(o, tok());
      auto head = take(l, p);
      ASSERT_TRUE(std::equal(head.begin(), head.end(), full.begin())) << "save point " << p;
      st = nlohmann::json::parse(l.state().dump());  // through text, as a checkpoint stores it
    }
    data::Loader l2(o, tok());
    l2.load_state(st);
    auto tail = take(l2, total_calls - p);
    EXPECT_TRUE(std::equal(tail.begin(), tail.end(), full.begin() + p)) << "save point " << p;
    EXPECT_EQ(l2.state(),
              [&] {
                data::Loader l3(o, tok());
                take(l3, total_calls);
                return l3.state();
              }())
        << "save point " << p;
  }
}
}  // namespace

TEST(Loader, ResumeContinuesTheUninterruptedStream) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 5, 9, true, "d", 20, 16);  // 45 samples
  auto o = base(pat);
  o.workers = 3;
  // 12 batches per epoch (last one partial), then the epoch end; save at 0, 1, k, the last batch
  // of the epoch, after the epoch end, and inside epoch 1.
  check_resume(o, 30, {0, 1, 5, 12, 13, 17});
}

TEST(Loader, ResumeAtAShardBoundaryAndOnAnotherRank) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 4, 8, true, "d", 20, 16);
  auto o = base(pat);
  o.workers = 1;
  o.batch_size = 8;
  o.sample_shuffle_buffer = 0;
  o.shard_shuffle_buffer = 0;
  {
    data::Loader l(o, tok());
    auto b = l.next();
    ASSERT_TRUE(b);
    EXPECT_EQ(b->keys.front(), "s0_0");
    EXPECT_EQ(b->keys.back(), "s0_7");  // batch 1 ends exactly at the end of shard 0
  }
  check_resume(o, 8, {1, 2});
  auto o2 = base(pat);
  o2.world_size = 2;
  o2.rank = 1;
  o2.workers = 2;
  check_resume(o2, 12, {2, 4, 5});
}

TEST(Loader, ResumeWithAnotherLayout) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 4, 8, true, "d", 12, 10);
  auto o = base(pat);
  o.world_size = 2;
  data::Loader l(o, tok());
  l.next();
  const auto mid = l.state();
  while (l.next()) {
  }
  const auto boundary = l.state();
  auto o4 = o;
  o4.world_size = 4;
  data::Loader l4(o4, tok());
  EXPECT_THROW(l4.load_state(mid), core::InputError);
  l4.load_state(boundary);  // an epoch boundary does not depend on the layout
  auto b = l4.next();
  ASSERT_TRUE(b);
  EXPECT_EQ(b->epoch, 1);
  o4.reshard_to_next_epoch = true;
  data::Loader l4b(o4, tok());
  l4b.load_state(mid);
  auto b2 = l4b.next();
  ASSERT_TRUE(b2);
  EXPECT_EQ(b2->epoch, 1);
  // Another seed: refused.
  auto o5 = o;
  o5.seed = 99;
  data::Loader l5(o5, tok());
  EXPECT_THROW(l5.load_state(mid), core::InputError);
}

TEST(Loader, ResampledModeIsDeterministicAndWeighted) {
  TempDir d1, d2;
  const auto a = test::make_dataset(d1.path().string(), 2, 5, true, "a", 12, 10);
  const auto b = test::make_dataset(d2.path().string(), 2, 5, true, "b", 12, 10);
  auto o = base(a + "::" + b);
  o.resampled = true;
  o.num_samples = 400;
  o.source_weights = {0.9, 0.1};
  o.workers = 2;
  std::vector<std::string> keys;
  {
    data::Loader l(o, tok());
    EXPECT_EQ(l.samples_per_epoch(), 400);
    keys = epoch_keys(l);
  }
  EXPECT_EQ(keys.size(), 400u);
  {
    data::Loader l(o, tok());
    EXPECT_EQ(epoch_keys(l), keys);
  }
  // Source a's shards are in folder d1: its keys are the same names, so tell them by the shard
  // draw through a caption-free proxy: the fraction of draws is checked on a second loader where
  // source b has other keys.
  TempDir d3;
  data::ShardWriterOptions wo;
  wo.out_dir = d3.path().string();
  wo.prefix = "b";
  wo.samples_per_shard = 5;
  {
    data::ShardWriter w(wo);
    for (int i = 0; i < 10; ++i)
      w.write("other" + std::to_string(i), {{"jpg", test::jpeg_bytes(12, 10, i)}, {"txt", "x"}});
    w.finish();
  }
  o.shards = a + "::" + d3.path().string() + "/b-{00000..00001}.tar";
  data::Loader l(o, tok());
  const auto ks = epoch_keys(l);
  const auto from_b = std::count_if(ks.begin(), ks.end(),
                                    [](const std::string& k) { return k.rfind("other", 0) == 0; });
  EXPECT_GT(from_b, 10);
  EXPECT_LT(from_b, 90);  // ~10 % of 400
  check_resume(o, 40, {3, 50 / 4});
}

namespace {
// Writes a tar with arbitrary members (ShardWriter writes whole samples; here any files).
void write_tar(const std::string& path,
               const std::vector<std::pair<std::string, std::string>>& members) {
  const auto dir = std::filesystem::path(path).parent_path().string();
  const auto name = std::filesystem::path(path).filename().string();
  const auto tmp = dir + "/.w";
  data::ShardWriterOptions o;
  o.out_dir = tmp;
  o.prefix = "x";
  o.samples_per_shard = 1 << 30;
  data::ShardWriter w(o);
  for (const auto& [file, bytes] : members) {
    const auto dot = file.find('.');
    w.write(file.substr(0, dot), {{file.substr(dot + 1), bytes}});
  }
  w.finish();
  std::filesystem::rename(tmp + "/x-00000.tar", path);
  std::filesystem::remove_all(tmp);
}
}  // namespace

TEST(Loader, BadDataIsSkippedAndCountedByKind) {
  TempDir d;
  const std::string good = test::jpeg_bytes(20, 16, 1);
  std::string truncated_jpg = test::jpeg_bytes(64, 48, 2);
  truncated_jpg.resize(truncated_jpg.size() / 2);
  const std::string big = test::jpeg_bytes(300, 200, 3);  // 60,000 pixels > the limit below
  write_tar(d.file("a.tar"), {{"g0.jpg", good},
                              {"g0.txt", "ok"},
                              {"g1.png", test::encode(test::test_image(20, 16, 5), ".png")},
                              {"g1.txt", "ok"},
                              {"g2.jpg", good},
                              {"g2.txt", "ok"},
                              {"c0.jpg", "not an image at all"},
                              {"c0.txt", "bad"},
                              {"c1.jpg", truncated_jpg},
                              {"c1.txt", "bad"},
                              {"n0.txt", "no image"},
                              {"n1.jpg", good},
                              {"t0.jpg", big},
                              {"t0.txt", "too big"},
                              {"g3.jpg", good},
                              {"g3.txt", "ok"},
                              {"g4.webp", test::encode(test::test_image(20, 16, 6), ".webp")},
                              {"g4.txt", "ok"}});
  // A tar cut inside its third sample's image: two samples survive.
  write_tar(d.file("b.tar"), {{"h0.jpg", good},
                              {"h0.txt", "ok"},
                              {"h1.jpg", good},
                              {"h1.txt", "ok"},
                              {"h2.jpg", test::jpeg_bytes(200, 150, 9)},
                              {"h2.txt", "ok"}});
  {
    std::ifstream in(d.file("b.tar"), std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(in)), {});
    all.resize(all.size() / 2 + 700);
    std::ofstream(d.file("b.tar"), std::ios::binary) << all;
  }
  write_tar(d.file("c.tar"),
            {{"p0.jpg", good}, {"p0.txt", "ok"}, {"p1.jpg", good}, {"p1.txt", "ok"}});
  std::ofstream(d.file("e.tar"))
      << "this is not a tar file, just text that goes on for a while ........";
  const std::string spec =
      d.file("{a,b,missing,e}.tar") + "::pipe:exit 3::pipe:cat " + d.file("c.tar");
  auto o = base(spec);
  o.workers = 1;
  // In order, so that the last good sample comes after every bad one (the epoch ends with it).
  o.shard_shuffle_buffer = 0;
  o.sample_shuffle_buffer = 0;
  o.num_samples = 9;  // 5 + 2 + 2 good samples
  o.max_bad_fraction = 1.0;
  o.max_image_pixels = 50000;
  data::Loader l(o, tok());
  auto keys = epoch_keys(l);
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, (std::vector<std::string>{"g0", "g1", "g2", "g3", "g4", "h0", "h1", "p0", "p1"}));
  const auto c = l.counters();
  EXPECT_EQ(c.samples, 9);
  EXPECT_EQ(c.image_corrupt, 2);
  EXPECT_EQ(c.missing_image, 1);
  EXPECT_EQ(c.missing_text, 1);
  EXPECT_EQ(c.image_too_large, 1);
  EXPECT_EQ(c.shard_truncated, 1);
  EXPECT_EQ(c.shard_unreadable, 2);  // missing.tar, e.tar
  EXPECT_EQ(c.pipe_failed, 1);
  EXPECT_EQ(c.repeated, 0);
  // The counters travel in the state.
  EXPECT_EQ(data::BadDataCounters::from_json(l.state()["counters"]), c);
}

TEST(Loader, TooMuchBadDataStopsWithAClearError) {
  TempDir d;
  std::vector<std::pair<std::string, std::string>> m;
  for (int i = 0; i < 20; ++i) {
    m.push_back({"k" + std::to_string(i) + ".jpg",
                 i % 2 ? test::jpeg_bytes(12, 10, i) : std::string("garbage")});
    m.push_back({"k" + std::to_string(i) + ".txt", "x"});
  }
  write_tar(d.file("a.tar"), m);
  auto o = base(d.file("a.tar"));
  o.workers = 1;
  o.num_samples = 10;
  o.max_bad_fraction = 0.2;
  o.bad_check_min_samples = 6;
  data::Loader l(o, tok());
  try {
    while (l.next()) {
    }
    FAIL() << "expected an error";
  } catch (const core::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("max_bad_fraction"), std::string::npos) << e.what();
  }
  EXPECT_THROW(l.next(), core::InputError);  // stays failed
}

TEST(Loader, NoUsableSampleIsAnErrorNotAHang) {
  TempDir d;
  write_tar(d.file("a.tar"),
            {{"k0.jpg", "garbage"}, {"k0.txt", "x"}, {"k1.jpg", "junk"}, {"k1.txt", "x"}});
  auto o = base(d.file("a.tar") + "::" + d.file("nothing-{0..3}.tar"));
  o.num_samples = 4;
  o.workers = 1;
  o.max_bad_fraction = 1.0;
  data::Loader l(o, tok());
  EXPECT_THROW(l.next(), core::InputError);
  auto o2 = base(d.file("nothing-{0..3}.tar"));
  o2.num_samples = 4;
  o2.workers = 2;
  data::Loader l2(o2, tok());
  try {
    l2.next();
    FAIL() << "expected an error";
  } catch (const core::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("nothing-"), std::string::npos) << e.what();
  }
}

TEST(Loader, JsonCaptionField) {
  TempDir d;
  write_tar(d.file("a.tar"), {{"k0.jpg", test::jpeg_bytes(12, 10, 0)},
                              {"k0.json", R"({"meta": {"caption": "hello"}})"},
                              {"k1.jpg", test::jpeg_bytes(12, 10, 1)},
                              {"k1.json", R"({"meta": {}})"}});
  auto o = base(d.file("a.tar"));
  o.workers = 1;
  o.num_samples = 1;
  o.batch_size = 1;
  o.text_key = "json:meta.caption";
  o.max_bad_fraction = 1.0;
  data::Loader l(o, tok());
  auto b = l.next();
  ASSERT_TRUE(b);
  std::vector<std::int64_t> want(16);
  test::ByteTokenizer(16).encode("hello", want.data());
  EXPECT_TRUE(std::equal(want.begin(), want.end(), b->tokens.data_ptr<std::int64_t>()));
  EXPECT_FALSE(l.next());
  EXPECT_EQ(l.counters().missing_text, 1);
}

TEST(Loader, MissingLabelIsCountedAsSuch) {
  TempDir d;
  write_tar(d.file("a.tar"), {{"k1.jpg", test::jpeg_bytes(12, 10, 1)},
                              {"k1.txt", "y"},
                              {"k2.jpg", test::jpeg_bytes(12, 10, 2)},
                              {"k2.txt", "z"},
                              {"k2.cls", "not a number"},
                              {"k0.jpg", test::jpeg_bytes(12, 10, 0)},
                              {"k0.txt", "x"},
                              {"k0.cls", "3"}});
  auto o = base(d.file("a.tar"));
  o.workers = 1;
  o.num_samples = 1;
  o.batch_size = 1;
  o.label_key = "cls";
  o.sample_shuffle_buffer = 0;
  o.max_bad_fraction = 1.0;
  data::Loader l(o, tok());
  auto b = l.next();
  ASSERT_TRUE(b);
  EXPECT_EQ(b->keys[0], "k0");
  EXPECT_EQ(b->labels.item<std::int64_t>(), 3);
  const auto c = l.counters();
  EXPECT_EQ(c.missing_label, 2);
  EXPECT_EQ(c.missing_text, 0);
  EXPECT_EQ(c.bad_samples(), 2);
  EXPECT_EQ(c.to_json().at("missing_label"), 2);
  EXPECT_EQ(data::BadDataCounters::from_json(c.to_json()), c);
}

namespace {
std::string g_fault_where;
void inject_fault(const char* where) {
  if (g_fault_where == where) throw std::runtime_error("injected failure");
}
// Sets the fault hook for one scope.
struct FaultAt {
  explicit FaultAt(const char* where) {
    g_fault_where = where;
    data::detail::set_fault_hook(&inject_fault);
  }
  ~FaultAt() { data::detail::set_fault_hook(nullptr); }
};

void expect_loader_error(const data::LoaderOptions& o, const std::string& want) {
  data::Loader l(o, tok());
  try {
    l.next();
    FAIL() << "expected an error naming " << want;
  } catch (const core::InputError& e) {
    FAIL() << "a loader failure is not an input error: " << e.what();
  } catch (const core::Error& e) {
    EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("injected failure"), std::string::npos) << e.what();
  }
  EXPECT_THROW(l.next(), core::Error);  // stays failed
}
}  // namespace

// A thread that cannot start or a batch that cannot be allocated ends the run with an error
// naming it (never std::terminate from a thrown exception in a thread or an unjoined thread).
TEST(Loader, ThreadAndAllocationFailuresAreErrors) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 2, 6, true, "d", 12, 10);
  auto o = base(pat);
  o.workers = 3;
  {
    FaultAt f("worker thread");
    expect_loader_error(o, "cannot start worker thread 1 of 3");
  }
  {
    FaultAt f("batch");
    expect_loader_error(o, "cannot allocate a batch of 4 samples");
  }
  {
    FaultAt f("collator thread");
    expect_loader_error(o, "cannot start the collator thread");
  }
  // Without a fault the same loader works.
  data::Loader l(o, tok());
  EXPECT_EQ(epoch_keys(l).size(), 12u);
}

// Pinned memory asked for where no CUDA driver is: a clear error naming data.pin_memory.
TEST(Loader, PinnedMemoryWithoutCudaIsAnError) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 1, 4, true, "d", 12, 10);
  auto o = base(pat);
  o.pin_memory = "on";
  data::Loader l(o, tok());
  if (at::hasCUDA()) {
    auto b = l.next();
    ASSERT_TRUE(b);
    EXPECT_TRUE(b->images.is_pinned());
    return;
  }
  try {
    l.next();
    FAIL() << "expected an error";
  } catch (const core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("data.pin_memory=on"), std::string::npos) << e.what();
  }
}

// Found by tests/fuzz/fuzz_loader_state.cpp: a float in the state (from a damaged checkpoint)
// was converted to an integer with undefined behaviour; now it is the state's own error.
TEST(Loader, StateWithNonIntegersIsRefused) {
  TempDir d;
  data::Loader l(base(test::make_dataset(d.path().string(), 2, 5)), tok());
  const auto good = l.state();
  for (const char* key : {"position", "epoch", "seed"}) {
    auto s = good;
    s[key] = 2.5e28;
    const auto msg = test::error_of([&] { l.load_state(s); });
    EXPECT_NE(msg.find(std::string("'") + key + "' is not an integer"), std::string::npos) << msg;
  }
  auto s = good;
  s["next_raw"] = {1e30, 2};
  EXPECT_THROW(l.load_state(s), core::InputError);
  s = good;
  s["counters"]["samples"] = 0.5;
  EXPECT_THROW(l.load_state(s), core::InputError);
  l.load_state(good);
  EXPECT_TRUE(l.next());
}

// Issue 25: a saved state's re-split pieces were summed unchecked (2^23 pieces of at most 2^40
// samples each, as the state's checks allow, pass 2^63). The sum is checked, and the error is the
// state's own (the checkpoint's loader part names its folder).
TEST(Loader, StatePieceCountsAreSummedChecked) {
  const std::int64_t big = std::int64_t{1} << 62;
  std::vector<std::vector<data::detail::Piece>> pieces(2);
  pieces[0].push_back({0, 0, 0, 0, big, false});
  pieces[1].push_back({0, 1, 0, 0, big - 1, false});
  EXPECT_EQ(data::detail::pieces_total(pieces, "data: loader state "), 2 * big - 1);
  pieces[1].push_back({0, 1, 0, 0, 1, false});
  const auto msg =
      test::error_of([&] { data::detail::pieces_total(pieces, "data: loader state "); });
  EXPECT_EQ(msg, "data: loader state field 'resplit' holds more samples than a 64-bit count");
}

namespace {
struct Blob {
  std::size_t n = 0;
  int id = 0;
};
std::size_t bytes_of(const Blob& b) {
  return b.n;
}
}  // namespace

// data.max_shuffle_buffer_bytes: the buffer stops filling at its byte bound (always holding at
// least one item), so a run of huge samples cannot fill thousands of slots.
TEST(Loader, ShuffleBufferIsBoundedInBytes) {
  data::detail::ShuffleBuffer<Blob> buf(1000, 1000, 1, 10'000);
  int pulled = 0;
  auto pull = [&](Blob& b) {
    b = Blob{4'000, pulled++};
    return data::detail::ShuffleBuffer<Blob>::item;
  };
  buf.fill(pull);
  EXPECT_EQ(buf.size(), 3u);  // 12,000 bytes: the third item passed the bound
  Blob out;
  int delivered = 0;
  for (int i = 0; i < 50; ++i) {
    buf.fill(pull);
    ASSERT_TRUE(buf.next(&out));
    ++delivered;
    EXPECT_LE(buf.size(), 3u);
  }
  EXPECT_EQ(delivered, 50);
  data::detail::ShuffleBuffer<Blob> one(1000, 1000, 1, 10);  // every item alone is too large
  one.fill(pull);
  EXPECT_EQ(one.size(), 1u);
  EXPECT_TRUE(one.next(&out));
}

namespace {

// One layout of a resume chain: its ranks x workers, the batches each rank takes before the next
// layout restores from all their states (the last layout: to the end of the epoch).
struct Stage {
  int world = 1, workers = 1, batches = -1;
  std::int64_t batch_size = 0;  // 0: the options' own
};

// What an epoch delivered over all ranks: each (key, image and token checksum) pair as often as
// it came, and the final ranks' counters summed.
struct Delivered {
  std::multiset<std::pair<std::string, std::uint64_t>> samples;
  data::BadDataCounters total;
  std::vector<int> last_batches;  // batches per rank in the last layout
};

void add_batch(Delivered& d, const data::Batch& b) {
  const auto img = b.images.contiguous(), tk = b.tokens.contiguous();
  for (std::int64_t i = 0; i < img.size(0); ++i) {
    const std::uint64_t h =
        fnv(img[i].data_ptr(), img[i].nbytes()) * 31 + fnv(tk[i].data_ptr(), tk[i].nbytes());
    d.samples.insert({b.keys[static_cast<std::size_t>(i)], h});
  }
}

data::BadDataCounters plus(const data::BadDataCounters& a, const data::BadDataCounters& b) {
  auto j = a.to_json();
  const auto k = b.to_json();
  for (const auto& [name, v] : k.items())
    j[name] = j[name].get<std::int64_t>() + v.get<std::int64_t>();
  return data::BadDataCounters::from_json(j);
}

// Epoch 0 of `o` through the stages in turn; each stage's ranks restore from every state the
// stage before saved (through text, as a checkpoint stores them).
Delivered run_stages(const data::LoaderOptions& o, const std::vector<Stage>& stages) {
  Delivered d;
  std::vector<nlohmann::json> states;
  for (std::size_t i = 0; i < stages.size(); ++i) {
    const Stage& st = stages[i];
    const bool last = i + 1 == stages.size();
    std::vector<nlohmann::json> saved;
    for (int r = 0; r < st.world; ++r) {
      auto lo = o;
      lo.world_size = st.world;
      lo.workers = st.workers;
      lo.rank = r;
      if (st.batch_size > 0) lo.batch_size = st.batch_size;
      data::Loader l(lo, tok());
      if (!states.empty()) l.load_states(states);
      int n = 0;
      for (; last || n < st.batches; ++n) {
        auto b = l.next();
        if (!b) break;
        EXPECT_EQ(b->epoch, 0);
        add_batch(d, *b);
      }
      if (last) {
        d.last_batches.push_back(n);
        d.total = plus(d.total, l.counters());
        auto next = l.next();  // the next epoch follows this layout's own plan
        EXPECT_TRUE(next && next->epoch == 1 && next->index_in_epoch == 0);
      }
      saved.push_back(nlohmann::json::parse(l.state().dump()));
    }
    states = std::move(saved);
  }
  return d;
}

// The epoch across the change delivers exactly the samples of the uninterrupted epoch on the first
// layout, each as often, with the same crops and tokens; the counters' sum is kept and every rank
// of the new layout delivers the same number of batches.
// Each rank's state of layout `o` after batches[r] batches.
std::vector<nlohmann::json> states_after(data::LoaderOptions o, const std::vector<int>& batches) {
  std::vector<nlohmann::json> states;
  for (int r = 0; r < o.world_size; ++r) {
    o.rank = r;
    data::Loader l(o, tok());
    for (int i = 0; i < batches[static_cast<std::size_t>(r)]; ++i) l.next();
    states.push_back(l.state());
  }
  return states;
}

void expect_same_epoch(const data::LoaderOptions& o, const std::vector<Stage>& stages) {
  Stage whole = stages.front();
  whole.batches = -1;
  const Delivered want = run_stages(o, {whole}), got = run_stages(o, stages);
  EXPECT_EQ(got.samples.size(), want.samples.size());
  EXPECT_TRUE(got.samples == want.samples);
  EXPECT_EQ(got.total, want.total);
  for (int n : got.last_batches) EXPECT_EQ(n, got.last_batches.front());
}

}  // namespace

TEST(Loader, WorldSizeChangeFrom4To2RanksMidEpoch) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 6, 10, true, "d", 12, 10);  // 60 samples
  // 15 per rank; after 2 batches 4 x 7 are left: 14 per new rank.
  expect_same_epoch(base(pat), {{4, 2, 2}, {2, 2}});
}

TEST(Loader, WorldSizeChangeFrom2To4RanksMidEpoch) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 6, 10, true, "d", 12, 10);
  // 30 per rank; after 3 batches 2 x 18 are left: 9 per new rank.
  expect_same_epoch(base(pat), {{2, 2, 3}, {4, 2}});
}

TEST(Loader, WorldSizeChangeFrom2To1RankAndOtherWorkerCounts) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 6, 10, true, "d", 12, 10);
  expect_same_epoch(base(pat), {{2, 2, 3}, {1, 2}});
  expect_same_epoch(base(pat), {{2, 2, 3}, {2, 3}});  // only the worker count changes
  expect_same_epoch(base(pat), {{2, 3, 1}, {1, 1}});
}

// A re-split epoch saved and resumed again: on its own layout, and on yet another one.
TEST(Loader, WorldSizeChangeTwiceInOneEpoch) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 6, 10, true, "d", 12, 10);
  expect_same_epoch(base(pat), {{4, 2, 1}, {2, 3, 2}, {2, 3, 1}, {4, 1}});
}

// Without sizes.json (whole shards per worker), in order, saved at a shard boundary.
TEST(Loader, WorldSizeChangeWithoutSizesAtAShardBoundary) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 4, 8, false, "d", 12, 10);
  auto o = base(pat);
  o.num_samples = 32;
  o.sample_shuffle_buffer = 0;
  o.shard_shuffle_buffer = 0;
  o.batch_size = 8;
  // 2 ranks x 1 worker: 16 samples each, whole shards; one batch ends exactly at a shard's end.
  expect_same_epoch(o, {{2, 1, 1}, {4, 1}});
}

// drop_last (as training uses it) and a per-rank batch size that changes with the world size
// (the same global batch): the saved layout's own T plans its streams.
TEST(Loader, WorldSizeChangeWithDropLastAndAnotherBatchSize) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 6, 11, true, "d", 12, 10);  // 66
  auto o = base(pat);
  o.drop_last = true;  // 4 ranks x batch 4: 16 each (2 dropped); after 1 batch 48 left
  expect_same_epoch(o, {{4, 2, 1, 4}, {2, 2, -1, 8}});
}

// Bad samples (counted once, by the worker that delivers the good sample after them) and workers
// that read a second pass of their part to fill their quota.
TEST(Loader, WorldSizeChangeWithBadSamples) {
  TempDir d;
  data::ShardWriterOptions w;
  w.out_dir = d.path().string();
  w.prefix = "b";
  w.samples_per_shard = 10;
  w.digits = 3;
  data::ShardWriter wr(w);
  for (int i = 0; i < 60; ++i) {
    const std::string key = "k" + std::to_string(i);
    // Bad: a header no decoder takes, and (issue 24.10: found by the skip's check too) JPEGs
    // whose header is good but whose data ends early.
    std::string img = i % 7 == 3 ? "not an image" : test::jpeg_bytes(12, 10, i);
    if (i % 11 == 5) img = test::jpeg_bytes(40, 30, i).substr(0, 200);
    wr.write(key, {{"jpg", img}, {"txt", "caption " + key}});
  }
  auto o = base(wr.finish().pattern);
  o.max_bad_fraction = 1.0;
  expect_same_epoch(o, {{4, 2, 2}, {2, 2}});
  expect_same_epoch(o, {{2, 2, 3}, {4, 3}});
}

// Issue 24, item 10: a new worker whose range starts mid-way through a saved stream skips the
// good samples before it without decoding them: 1 rank x 1 worker stopped after one batch of 4
// out of 200 samples, rank 1 of 2 skips the first 98 of the rest; its first batch costs no more
// decodes than the batches and queues it fills ahead (4 x 3 + 11), not 98.
TEST(Loader, WorldSizeChangeSkipsWithoutDecoding) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 4, 50, true, "d", 40, 30);
  auto o = base(pat);
  o.workers = 1;
  const auto states = states_after(o, {1});
  o.world_size = 2;
  o.rank = 1;
  data::Loader l(o, tok());
  l.load_states(states);
  const auto before = data::detail::images_processed();
  ASSERT_TRUE(l.next().has_value());
  EXPECT_LT(data::detail::images_processed() - before, 40);
}

// Resampled streams have no epoch order, but each saved stream's rest is as deterministic.
TEST(Loader, WorldSizeChangeInResampledMode) {
  TempDir d1, d2;
  const auto a = test::make_dataset(d1.path().string(), 2, 5, true, "a", 12, 10);
  const auto b = test::make_dataset(d2.path().string(), 2, 5, true, "b", 12, 10);
  auto o = base(a + "::" + b);
  o.resampled = true;
  o.source_weights = {0.5, 0.5};
  o.num_samples = 48;
  expect_same_epoch(o, {{2, 2, 2}, {4, 1}});
}

// When the rest does not split evenly, ranks are filled with samples delivered a second time,
// counted as repeated (as an epoch of the layout's own plan fills them).
TEST(Loader, WorldSizeChangeFillsUnevenRanksWithRepeats) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 6, 10, true, "d", 12, 10);
  auto o = base(pat);
  const Delivered want = run_stages(o, {{2, 2, -1}});
  const Delivered got = run_stages(o, {{2, 2, 3}, {4, 2}});  // 36 left, 9 per rank: even
  EXPECT_TRUE(got.samples == want.samples);
  const Delivered odd =
      run_stages(o, {{2, 2, 2}, {4, 3}, {3, 2}});  // 44 left, re-split at once, then 3 x 15 = 45
  using Set = std::set<std::pair<std::string, std::uint64_t>>;
  EXPECT_TRUE(Set(odd.samples.begin(), odd.samples.end()) ==
              Set(want.samples.begin(), want.samples.end()));
  EXPECT_EQ(odd.samples.size(), 61u);
  EXPECT_EQ(odd.total.repeated, 1);
  EXPECT_EQ(odd.total.samples, want.total.samples + 1);
}

// Where the rule cannot hold: not every saved rank's state, states of two checkpoints, another
// seed. An explicit opt-out skips the rest of the epoch.
TEST(Loader, WorldSizeChangeRefusesWhatItCannotResplit) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 6, 10, true, "d", 12, 10);
  auto o = base(pat);
  o.world_size = 2;
  const auto states = states_after(o, {1, 2});
  auto o4 = o;
  o4.world_size = 4;
  o4.rank = 0;
  data::Loader l4(o4, tok());
  auto msg = test::error_of([&] { l4.load_states({states[0]}); });
  EXPECT_NE(msg.find("needs the states of all 2 saved ranks"), std::string::npos) << msg;
  msg = test::error_of([&] { l4.load_states({states[1], states[0]}); });
  EXPECT_NE(msg.find("all 2 saved ranks"), std::string::npos) << msg;
  auto other = states;
  other[1]["seed"] = 99;
  EXPECT_THROW(l4.load_states(other), core::InputError);
  auto broken = states;
  broken[1]["epoch"] = 3;  // another checkpoint's
  EXPECT_THROW(l4.load_states(broken), core::InputError);
  l4.load_states(states);  // batch counts differ (1 and 2 taken): still each sample once
  o4.reshard_to_next_epoch = true;
  data::Loader skip(o4, tok());
  skip.load_states(states);
  auto b = skip.next();
  ASSERT_TRUE(b);
  EXPECT_EQ(b->epoch, 1);
}

// A re-split state from a damaged checkpoint: its own error, never a hang or a crash.
TEST(Loader, WorldSizeChangeDamagedResplitStateIsRefused) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 6, 10, true, "d", 12, 10);
  auto o = base(pat);
  o.world_size = 2;
  auto states = states_after(o, {1, 1});
  o.world_size = 1;
  o.rank = 0;
  data::Loader l(o, tok());
  l.load_states(states);
  l.next();
  const auto good = l.state();
  ASSERT_TRUE(good.contains("resplit"));
  for (auto edit : std::vector<std::function<void(nlohmann::json&)>>{
           [](nlohmann::json& s) { s["resplit"]["pieces"][0][0][4] = 1000; },
           [](nlohmann::json& s) { s["resplit"]["pieces"][0][0][0] = 7; },
           [](nlohmann::json& s) { s["resplit"]["pieces"][0][0] = "x"; },
           [](nlohmann::json& s) { s["resplit"]["pieces"] = nlohmann::json::array(); },
           [](nlohmann::json& s) { s["resplit"]["workers"] = 2.5; },
           [](nlohmann::json& s) {
             s["next_piece"] = {9, 0};
           },
           [](nlohmann::json& s) { s["resplit"] = 3; }}) {
    auto s = good;
    edit(s);
    EXPECT_THROW(l.load_state(s), core::InputError) << s.dump();
  }
  l.load_state(good);
  EXPECT_TRUE(l.next());
}

// Token-budget batches (issue 28, item 2; docs/data.md "Token-budget batches").
namespace {

data::LoaderOptions budget_options(data::LoaderOptions o) {
  o.naflex_patch = 4;
  o.naflex_max_tokens = 16;  // the model's own budget (evaluation)
  o.naflex_seq_lens = {4, 6, 12};
  o.naflex_max_tokens_per_batch = 24;  // 6, 4 or 2 pictures per batch
  return o;
}

std::multiset<std::string> keys_of(const Delivered& d) {
  std::multiset<std::string> keys;
  for (const auto& [k, h] : d.samples) keys.insert(k);
  return keys;
}

}  // namespace

// The schedule on its own: each rank's batches are the same multiset in another order (so the
// same samples and the same number of steps on every rank), the counts differ between ranks at a
// step, everything is a pure function of (seed, epoch, rank), and drop_last keeps full batches.
TEST(TokenBudget, ScheduleGivesEveryRankTheSameBatchesInAnotherOrder) {
  auto o = budget_options(data::LoaderOptions{});
  o.seed = 11;
  o.world_size = 3;
  const std::int64_t T = 101;
  std::vector<std::vector<std::pair<std::int64_t, std::int64_t>>> ranks;
  for (int r = 0; r < 3; ++r) {
    o.rank = r;
    const data::detail::RankSchedule s(o, 2, 0, T), again(o, 2, 0, T);
    ASSERT_EQ(s.batches(), again.batches());
    ASSERT_EQ(s.start(s.batches()), T);  // every sample of the rank once
    auto& v = ranks.emplace_back();
    int cut = 0;
    for (std::int64_t k = 0; k < s.batches(); ++k) {
      const auto& b = s.batch(k);
      EXPECT_EQ(b.seq_len, again.batch(k).seq_len);
      EXPECT_EQ(b.count, again.batch(k).count);
      EXPECT_TRUE(b.seq_len == 4 || b.seq_len == 6 || b.seq_len == 12);
      if (b.count != 24 / b.seq_len) ++cut;
      EXPECT_LE(b.count, 24 / b.seq_len);
      EXPECT_EQ(s.seq_len_at(s.start(k)), b.seq_len);
      EXPECT_EQ(s.seq_len_at(s.start(k + 1) - 1), b.seq_len);
      v.push_back({b.seq_len, b.count});
    }
    EXPECT_LE(cut, 1);  // only the batch that ends the canonical list is cut
  }
  ASSERT_EQ(ranks[0].size(), ranks[1].size());
  ASSERT_EQ(ranks[0].size(), ranks[2].size());
  int differ = 0;
  for (std::size_t k = 0; k < ranks[0].size(); ++k)
    differ += ranks[0][k].second != ranks[1][k].second;
  EXPECT_GT(differ, 0) << "the ranks hold different numbers of pictures at some step";
  for (auto& v : ranks) std::sort(v.begin(), v.end());
  EXPECT_EQ(ranks[0], ranks[1]);
  EXPECT_EQ(ranks[0], ranks[2]);
  // Another epoch: the same batches in another order.
  o.rank = 0;
  const data::detail::RankSchedule e2(o, 2, 0, T), e3(o, 3, 0, T);
  ASSERT_EQ(e2.batches(), e3.batches());
  bool reordered = false;
  for (std::int64_t k = 0; k < e2.batches(); ++k)
    reordered = reordered || e2.batch(k).seq_len != e3.batch(k).seq_len;
  EXPECT_TRUE(reordered);
  // drop_last: full batches only, at most the samples available.
  o.drop_last = true;
  const std::int64_t kept = data::detail::budget_rank_samples(o, 0, T);
  EXPECT_LE(kept, T);
  EXPECT_GT(kept, T - 6);
  const data::detail::RankSchedule full(o, 2, 0, kept);
  EXPECT_EQ(full.start(full.batches()), kept);
  for (std::int64_t k = 0; k < full.batches(); ++k)
    EXPECT_EQ(full.batch(k).count, 24 / full.batch(k).seq_len);
}

// The loader: each batch holds max_tokens / L pictures of at most L patches (grids within L,
// zeros after), every rank delivers batches_per_epoch() batches, the ranks' counts differ at some
// step, and every sample comes once per epoch over the ranks.
TEST(Loader, TokenBudgetBatchesVaryAndCoverTheEpochOnce) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 6, 10, true, "d", 30, 12);  // 60
  auto o = budget_options(base(pat));
  o.world_size = 2;
  std::multiset<std::string> seen;
  std::vector<std::vector<std::int64_t>> counts(2);
  for (int r = 0; r < 2; ++r) {
    o.rank = r;
    data::Loader l(o, tok());
    EXPECT_EQ(l.samples_per_epoch(), 30);
    while (auto b = l.next()) {
      const std::int64_t n = b->images.size(0), L = b->images.size(1);
      EXPECT_TRUE(L == 4 || L == 6 || L == 12) << L;
      EXPECT_LE(n, 24 / L);
      EXPECT_EQ(b->images.size(2), 4 * 4 * 3);
      EXPECT_EQ(b->grids.size(0), n);
      const auto patches = b->grids.select(1, 0) * b->grids.select(1, 1);
      EXPECT_LE(patches.max().item<std::int64_t>(), L);
      EXPECT_GE(patches.min().item<std::int64_t>(), 1);
      counts[static_cast<std::size_t>(r)].push_back(n);
      seen.insert(b->keys.begin(), b->keys.end());
      // The trainer's epoch-tail and step mapping read the batches left.
      EXPECT_EQ(l.position().batches_left,
                l.batches_per_epoch() -
                    static_cast<std::int64_t>(counts[static_cast<std::size_t>(r)].size()));
    }
    EXPECT_EQ(static_cast<std::int64_t>(counts[static_cast<std::size_t>(r)].size()),
              l.batches_per_epoch());
  }
  EXPECT_EQ(counts[0].size(), counts[1].size());
  EXPECT_NE(counts[0], counts[1]);
  EXPECT_EQ(seen.size(), 60u);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 60u);
  // drop_last: full batches only.
  o.drop_last = true;
  o.rank = 1;
  data::Loader l(o, tok());
  while (auto b = l.next()) EXPECT_EQ(b->images.size(0), 24 / b->images.size(1));
}

// A mid-epoch state resumes exactly (images, tokens, keys, later epochs) at batch 0, 1, k, the
// last batch of the epoch, after its end and inside the next epoch.
TEST(Loader, TokenBudgetResumeMidEpochEqualsAStraightRun) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 5, 9, true, "d", 30, 12);  // 45
  auto o = budget_options(base(pat));
  o.workers = 3;
  o.world_size = 2;
  o.rank = 1;
  std::int64_t per_epoch = 0;
  {
    data::Loader l(o, tok());
    per_epoch = l.batches_per_epoch();
  }
  const int n = static_cast<int>(per_epoch);
  check_resume(o, 2 * n + 4, {0, 1, 3, n, n + 1, n + 3});
}

// The rest of a token-budget epoch re-split onto 3 ranks, onto 1 rank and onto another budget
// (the same ranks), and a re-split epoch resumed on its own layout: every sample of the epoch
// still comes once (sample positions do not depend on the batch counts), each new rank delivers
// the same number of batches, and a sample gets the sequence length of the batch it lands in.
TEST(Loader, TokenBudgetReSplitOnAnotherWorldSize) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 6, 10, true, "d", 30, 12);  // 60
  auto o = budget_options(base(pat));
  const auto want = keys_of(run_stages(o, {{2, 2, -1}}));
  ASSERT_EQ(want.size(), 60u);
  for (const std::vector<Stage>& stages :
       {std::vector<Stage>{{2, 2, 2}, {3, 2}}, std::vector<Stage>{{2, 2, 3}, {1, 1}},
        std::vector<Stage>{{2, 2, 1}, {3, 1, 2}, {2, 2}},
        std::vector<Stage>{{2, 2, 2}, {3, 1, 1}, {3, 1}}}) {  // the same layout inside a re-split
    const Delivered got = run_stages(o, stages);
    const auto keys = keys_of(got);
    // A rest that does not divide by the new world size is filled with repeats (counted).
    EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()),
              std::set<std::string>(want.begin(), want.end()));
    EXPECT_EQ(static_cast<std::int64_t>(keys.size()), 60 + got.total.repeated);
    for (int b : got.last_batches) EXPECT_EQ(b, got.last_batches.front());
  }
  // Another budget on the same ranks re-splits as well (the saved batch counts no longer hold).
  auto states = states_after(
      [&] {
        auto a = o;
        a.world_size = 2;
        return a;
      }(),
      {2, 2});
  auto other = o;
  other.world_size = 2;
  other.naflex_seq_lens = {16};
  other.naflex_max_tokens_per_batch = 32;
  std::multiset<std::string> rest;
  std::vector<int> batches;
  for (int r = 0; r < 2; ++r) {
    other.rank = r;
    data::Loader l(other, tok());
    l.load_states(states);
    int n = 0;
    while (auto b = l.next()) {
      EXPECT_EQ(b->images.size(1), 16);
      rest.insert(b->keys.begin(), b->keys.end());
      ++n;
    }
    batches.push_back(n);
  }
  EXPECT_EQ(batches[0], batches[1]);
  std::multiset<std::string> head;
  for (int r = 0; r < 2; ++r) {
    auto a = o;
    a.world_size = 2;
    a.rank = r;
    data::Loader l(a, tok());
    for (int i = 0; i < 2; ++i) {
      auto b = l.next();
      head.insert(b->keys.begin(), b->keys.end());
    }
  }
  std::set<std::string> all(head.begin(), head.end());
  all.insert(rest.begin(), rest.end());
  EXPECT_EQ(all.size(), 60u);
  EXPECT_LE(head.size() + rest.size(), 61u);
}

// Settings that cannot work are named with the key and what was expected.
TEST(Loader, TokenBudgetSettingsAreCheckedByName) {
  TempDir d;
  const auto pat = test::make_dataset(d.path().string(), 1, 8, true, "d", 30, 12);
  const auto expect_error = [&](const data::LoaderOptions& o, const std::string& want) {
    try {
      data::Loader l(o, tok());
      FAIL() << "expected an error naming " << want;
    } catch (const core::InputError& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  };
  auto o = budget_options(base(pat));
  o.drop_last = true;  // training's rule: the plan draws its batches at once
  o.naflex_seq_lens = {4, 0};
  expect_error(o, "data.naflex_seq_lens holds 0; expected sequence lengths");
  o = budget_options(base(pat));
  o.drop_last = true;
  o.naflex_max_tokens_per_batch = 8;
  expect_error(o,
               "data.naflex_max_tokens_per_batch is 8; expected at least the longest of "
               "data.naflex_seq_lens (12)");
  o = budget_options(base(pat));
  o.naflex_patch = 0;
  expect_error(o, "data.naflex_seq_lens is set but the model takes square pictures");
  // From the config: 0 tokens per batch is train.batch_size pictures at the longest length.
  config::DataConfig dc;
  dc.train_shards = pat;
  dc.naflex_seq_lens = {4, 12};
  const auto from = data::LoaderOptions::from_config(dc, 5, 16, 0, 1, 0);
  EXPECT_EQ(from.naflex_max_tokens_per_batch, 60);
}
