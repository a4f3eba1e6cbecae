#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>

#include "clipper/train/metrics.hpp"
#include "test_util.hpp"

using namespace clipper;

TEST(Metrics, Crc32cKnownValue) {
  // The standard check value of CRC-32C.
  EXPECT_EQ(train::crc32c("123456789", 9), 0xE3069283u);
}

TEST(Metrics, JsonlLines) {
  test::TempDir d;
  {
    train::JsonlSink s(d.file("metrics.jsonl"));
    s.write(1, {{"loss", 2.5}, {"lr", 1e-3}});
    s.write(2, {{"loss", std::numeric_limits<double>::quiet_NaN()}});
  }
  std::ifstream in(d.file("metrics.jsonl"));
  std::string l1, l2;
  std::getline(in, l1);
  std::getline(in, l2);
  EXPECT_EQ(l1, R"({"step":1,"loss":2.5,"lr":0.001})");
  EXPECT_EQ(l2, R"({"step":2,"loss":null})");
}

TEST(Metrics, TensorBoardReadBackByTheRealPackage) {
  test::TempDir d;
  {
    train::TensorBoardSink s(d.file("tb"));
    for (int step = 1; step <= 3; ++step)
      s.write(step, {{"train/loss", 4.0 / step}, {"train/lr", 0.001 * step}});
  }
  const auto r =
      test::run(test::python() + " " + test::source_path("tests/train/read_tensorboard.py") + " " +
                d.file("tb"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("train/loss 1 4\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("train/loss 3 1.33333\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("train/lr 2 0.002\n"), std::string::npos) << r.output;
}
