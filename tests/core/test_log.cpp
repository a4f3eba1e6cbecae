#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "test_util.hpp"

using namespace clipper::core;

namespace {
std::string slurp(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

TEST(Log, EveryRankWritesItsOwnFile) {
  clipper::test::TempDir dir;
  for (int rank : {0, 3}) {
    log::Options o;
    o.rank = rank;
    o.console_level = log::Level::off;
    o.file_path = dir.file("logs/rank" + std::to_string(rank) + ".log");
    log::configure(o);
    CLIPPER_INFO("hello from " << rank);
    CLIPPER_DEBUG("details " << rank);
    log::flush();
  }
  log::configure({});
  const std::string r3 = slurp(dir.file("logs/rank3.log"));
  EXPECT_NE(r3.find("[rank 3] hello from 3"), std::string::npos) << r3;
  EXPECT_NE(r3.find("details 3"), std::string::npos) << r3;
  EXPECT_EQ(r3.find("hello from 0"), std::string::npos);
  EXPECT_NE(slurp(dir.file("logs/rank0.log")).find("hello from 0"), std::string::npos);
}

TEST(Log, LevelsFilter) {
  clipper::test::TempDir dir;
  log::Options o;
  o.console_level = log::Level::off;
  o.file_level = log::Level::warn;
  o.file_path = dir.file("x.log");
  log::configure(o);
  EXPECT_FALSE(log::enabled(log::Level::info));
  EXPECT_TRUE(log::enabled(log::Level::warn));
  CLIPPER_INFO("quiet");
  CLIPPER_WARN("loud");
  log::flush();
  log::configure({});
  const std::string s = slurp(dir.file("x.log"));
  EXPECT_EQ(s.find("quiet"), std::string::npos);
  EXPECT_NE(s.find("loud"), std::string::npos);
}

TEST(Log, ParseLevel) {
  EXPECT_EQ(log::parse_level("debug"), log::Level::debug);
  EXPECT_EQ(log::parse_level("warning"), log::Level::warn);
  EXPECT_THROW(log::parse_level("loud"), InputError);
}

TEST(Log, RateLimiterHoldsBackAndCounts) {
  log::RateLimiter rl(std::chrono::milliseconds(50));
  long long held = -1;
  EXPECT_TRUE(rl.allow("shard-a", &held));
  EXPECT_EQ(held, 0);
  EXPECT_FALSE(rl.allow("shard-a"));
  EXPECT_FALSE(rl.allow("shard-a"));
  EXPECT_TRUE(rl.allow("shard-b"));  // keys are independent
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  EXPECT_TRUE(rl.allow("shard-a", &held));
  EXPECT_EQ(held, 2);
}

TEST(Log, CredentialsAreMaskedInEveryLine) {
  clipper::test::TempDir dir;
  log::Options o;
  o.console_level = log::Level::off;
  o.file_path = dir.file("r.log");
  log::configure(o);
  CLIPPER_WARN("shard pipe:curl -H 'Authorization: Bearer s3cr3t' https://u:pw@h/a.tar failed");
  log::flush();
  log::configure({});
  const std::string text = slurp(dir.file("r.log"));
  EXPECT_EQ(text.find("s3cr3t"), std::string::npos) << text;
  EXPECT_EQ(text.find("u:pw"), std::string::npos) << text;
  EXPECT_NE(text.find("'Authorization: ***'"), std::string::npos) << text;
}
