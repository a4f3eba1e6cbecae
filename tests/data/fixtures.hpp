#pragma once
// Test-only helpers for the data suites: a tiny byte tokenizer (the real ones live in the
// tokenizer part) and generated shards with small images written with OpenCV.
#include <algorithm>
#include <cstdint>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <vector>

#include "clipper/data/shard_writer.hpp"
#include "clipper/tokenizer/tokenizer.hpp"

namespace clipper::test {

// start 1, each byte + 3, end 2, pad 0.
class ByteTokenizer : public tokenizer::Tokenizer {
 public:
  explicit ByteTokenizer(std::int64_t context = 16) : L_(context) {}
  void encode(std::string_view text, std::int64_t* out) const override {
    std::fill(out, out + L_, 0);
    std::int64_t n = 0;
    out[n++] = 1;
    for (unsigned char c : text) {
      if (n == L_ - 1) break;
      out[n++] = c + 3;
    }
    out[n] = 2;
  }
  std::int64_t context_length() const override { return L_; }
  std::int64_t vocab_size() const override { return 259; }

 private:
  std::int64_t L_;
};

// A textured colour image (smooth gradients + a few shapes), BGR as OpenCV holds it.
inline cv::Mat test_image(int w, int h, int seed) {
  cv::Mat m(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      m.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uchar>((x * 255) / std::max(1, w - 1)),
                                        static_cast<uchar>((y * 255) / std::max(1, h - 1)),
                                        static_cast<uchar>((seed * 37 + x + y) % 256));
  cv::circle(m, {w / 3, h / 2}, std::max(2, std::min(w, h) / 5), cv::Scalar(seed % 256, 40, 200),
             -1);
  return m;
}

inline std::string encode(const cv::Mat& m, const std::string& ext, std::vector<int> params = {}) {
  std::vector<uchar> buf;
  cv::imencode(ext, m, buf, params);
  return std::string(buf.begin(), buf.end());
}

inline std::string jpeg_bytes(int w, int h, int seed, int quality = 90) {
  return encode(test_image(w, h, seed), ".jpg", {cv::IMWRITE_JPEG_QUALITY, quality});
}

// Writes `shards` shards of `per_shard` samples each (keys "s<shard>_<i>", caption "caption <key>")
// into `dir` with prefix `prefix`; returns the brace pattern. sizes.json is written unless
// `sizes` is false.
inline std::string make_dataset(const std::string& dir, int shards, int per_shard,
                                bool sizes = true, const std::string& prefix = "d", int w = 40,
                                int h = 30) {
  data::ShardWriterOptions o;
  o.out_dir = dir;
  o.prefix = prefix;
  o.samples_per_shard = per_shard;
  o.digits = 3;
  data::ShardWriter wr(o);
  for (int s = 0; s < shards; ++s)
    for (int i = 0; i < per_shard; ++i) {
      const std::string key = "s" + std::to_string(s) + "_" + std::to_string(i);
      wr.write(key, {{"jpg", jpeg_bytes(w + (i % 5), h + (s % 3), s * 1000 + i)},
                     {"txt", "caption " + key}});
    }
  auto r = wr.finish();
  if (!sizes) std::remove((dir + "/sizes.json").c_str());
  return r.pattern;
}

}  // namespace clipper::test
