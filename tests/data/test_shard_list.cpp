// Shard lists: brace expansion, '::' sources with weights, sizes.json.
#include <gtest/gtest.h>

#include "clipper/core/error.hpp"
#include "clipper/data/shard_list.hpp"
#include "test_util.hpp"

using namespace clipper;

TEST(ShardList, BraceRangesKeepZeroPadding) {
  const auto v = data::expand_braces("d/{00008..00011}.tar");
  EXPECT_EQ(v,
            (std::vector<std::string>{"d/00008.tar", "d/00009.tar", "d/00010.tar", "d/00011.tar"}));
  EXPECT_EQ(data::expand_braces("x/{0..999}.tar").size(), 1000u);
  EXPECT_EQ(data::expand_braces("plain.tar"), (std::vector<std::string>{"plain.tar"}));
}

TEST(ShardList, SeveralBracesAndAlternatives) {
  const auto v = data::expand_braces("{a,b}/{0..1}-{x,y}.tar");
  EXPECT_EQ(v, (std::vector<std::string>{"a/0-x.tar", "a/0-y.tar", "a/1-x.tar", "a/1-y.tar",
                                         "b/0-x.tar", "b/0-y.tar", "b/1-x.tar", "b/1-y.tar"}));
  EXPECT_EQ(data::expand_braces("pipe:curl -s http://h/{00..02}.tar").back(),
            "pipe:curl -s http://h/02.tar");
}

TEST(ShardList, MalformedBracesAreErrors) {
  EXPECT_THROW(data::expand_braces("a/{0..3.tar"), core::InputError);
  EXPECT_THROW(data::expand_braces("a/0..3}.tar"), core::InputError);
  EXPECT_THROW(data::expand_braces("a/{5..3}.tar"), core::InputError);
  EXPECT_THROW(data::expand_braces("a/{x..3}.tar"), core::InputError);
}

// A pattern is untrusted text: its expansion is bounded before any name is made, numbers too
// long for 64 bits are refused, and many braces do not recurse.
TEST(ShardList, ExpansionIsBounded) {
  const auto big = test::error_of([] { data::expand_braces("a/{0..9999}/{0..9999}.tar"); });
  EXPECT_NE(big.find("more than 1000000 shards"), std::string::npos) << big;
  EXPECT_THROW(data::expand_braces("a/{0..99999999}.tar"), core::InputError);
  EXPECT_THROW(data::expand_braces("a/{0..99999999999999999999}.tar"), core::InputError);
  EXPECT_EQ(data::expand_braces("a/{0..999}/{0..999}.tar").size(), 1000000u);
  std::string many;
  for (int i = 0; i < 100000; ++i) many += "{x}";
  EXPECT_EQ(data::expand_braces(many), std::vector<std::string>{std::string(100000, 'x')});
}

TEST(ShardList, SourcesWeightsAndSizes) {
  test::TempDir d;
  d.write("a/sizes.json", R"({"0.tar": 10, "1.tar": 12})");
  const auto l = data::parse_shard_list(
      d.file("a/{0..1}.tar") + "::" + d.file("b/{0..2}.tar") + "::pipe:cat x.tar", {2.0, 1.0, 1.0});
  ASSERT_EQ(l.shards.size(), 6u);
  EXPECT_EQ(l.shards[0].size, 10);
  EXPECT_EQ(l.shards[1].size, 12);
  EXPECT_EQ(l.shards[2].size, -1);
  EXPECT_EQ(l.shards[2].source, 1);
  EXPECT_EQ(l.shards[5].url, "pipe:cat x.tar");
  EXPECT_EQ(l.shards[5].source, 2);
  EXPECT_DOUBLE_EQ(l.source_weights[0], 0.5);
  EXPECT_FALSE(l.sizes_known());
  EXPECT_EQ(l.total_size(), -1);
  const auto k = data::parse_shard_list(d.file("a/{0..1}.tar"));
  EXPECT_EQ(k.total_size(), 22);
  EXPECT_THROW(data::parse_shard_list("a.tar::b.tar", {1.0}), core::InputError);
  EXPECT_THROW(data::parse_shard_list("a.tar::::b.tar"), core::InputError);
  d.write("c/sizes.json", "{not json");
  EXPECT_THROW(data::parse_shard_list(d.file("c/0.tar")), core::InputError);
}
