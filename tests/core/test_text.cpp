#include <gtest/gtest.h>

#include "clipper/core/text.hpp"

using namespace clipper::core;

TEST(Text, EditDistance) {
  EXPECT_EQ(edit_distance("", ""), 0u);
  EXPECT_EQ(edit_distance("lr", "lrr"), 1u);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(edit_distance("abc", ""), 3u);
}

TEST(Text, NearestPicksClosestWithinBound) {
  const std::vector<std::string> c = {"optim.lr", "optim.eps", "train.epochs"};
  EXPECT_EQ(nearest("optim.lrr", c), "optim.lr");
  EXPECT_EQ(nearest("train.epoch", c), "train.epochs");
  EXPECT_EQ(nearest("completely.different.thing", c), "");
}

TEST(Text, SplitJoinTrim) {
  EXPECT_EQ(split("a;b;;c", ';'), (std::vector<std::string>{"a", "b", "", "c"}));
  EXPECT_EQ(join({"a", "b"}, ", "), "a, b");
  EXPECT_EQ(trim("  x y \n"), "x y");
  EXPECT_EQ(trim("   "), "");
}
