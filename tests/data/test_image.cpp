// Decode and transforms: crop boxes as torchvision draws them, DCT-scaled JPEG decode close to a
// full decode, grey/CMYK/alpha to RGB, PNG/WebP, the pixel limit, damaged images.
#include <gtest/gtest.h>
#include <turbojpeg.h>

#include <cmath>
#include <cstring>
#include <set>

#include "clipper/data/image.hpp"
#include "fixtures.hpp"

using namespace clipper;

namespace {
// The reference: OpenCV full decode, crop `box`, bicubic resize to S.
cv::Mat reference(const std::string& bytes, data::CropBox box, int S) {
  cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));
  cv::Mat bgr = cv::imdecode(raw, cv::IMREAD_COLOR), rgb, out;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  // Shrinking by 1.5x or more: an area filter, like the DCT-domain scaling it is compared with.
  const bool shrink = std::min(box.w, box.h) >= 1.5 * S;
  cv::resize(rgb(cv::Rect(box.x, box.y, box.w, box.h)), out, cv::Size(S, S), 0, 0,
             shrink ? cv::INTER_AREA : cv::INTER_CUBIC);
  return out;
}
// The evaluation reference: OpenCV full decode, resized as torchvision's Resize(S), centre S x S.
cv::Mat reference_eval(const std::string& bytes, int S) {
  cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));
  cv::Mat bgr = cv::imdecode(raw, cv::IMREAD_COLOR), rgb, resized;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  const auto rc = data::resize_then_center_crop(rgb.cols, rgb.rows, S);
  const bool shrink = std::min(rgb.cols, rgb.rows) >= 1.5 * S;
  cv::resize(rgb, resized, cv::Size(rc.resized_width, rc.resized_height), 0, 0,
             shrink ? cv::INTER_AREA : cv::INTER_CUBIC);
  return resized(cv::Rect(rc.left, rc.top, S, S)).clone();
}
double mean_abs_diff(const cv::Mat& a, const std::vector<std::uint8_t>& b) {
  double s = 0;
  for (std::size_t i = 0; i < b.size(); ++i)
    s += std::abs(static_cast<int>(a.data[i]) - static_cast<int>(b[i]));
  return s / static_cast<double>(b.size());
}
}  // namespace

TEST(Image, RandomResizedCropBoxesFollowTorchvision) {
  data::TransformSpec spec;
  std::set<std::tuple<int, int, int, int>> distinct;
  for (std::uint64_t seed = 0; seed < 2000; ++seed) {
    const auto b = data::random_resized_crop_box(256, 192, spec, seed);
    ASSERT_GE(b.x, 0);
    ASSERT_GE(b.y, 0);
    ASSERT_LE(b.x + b.w, 256);
    ASSERT_LE(b.y + b.h, 192);
    const double area = static_cast<double>(b.w) * b.h / (256.0 * 192.0);
    const double ratio = static_cast<double>(b.w) / b.h;
    ASSERT_GE(area, 0.88);
    ASSERT_LE(area, 1.0);
    ASSERT_GE(ratio, 0.74);
    ASSERT_LE(ratio, 1.35);
    distinct.insert({b.x, b.y, b.w, b.h});
  }
  EXPECT_GT(distinct.size(), 500u);
  EXPECT_EQ(data::random_resized_crop_box(256, 192, spec, 5).x,
            data::random_resized_crop_box(256, 192, spec, 5).x);
  // A very wide image: no try fits, the fallback keeps the full height and the widest ratio.
  const auto f = data::random_resized_crop_box(1000, 100, spec, 1);
  EXPECT_EQ(f.h, 100);
  EXPECT_EQ(f.w, 133);
  EXPECT_EQ(f.x, (1000 - 133) / 2);
}

// torchvision's Resize(S) + CenterCrop(S): the longer side truncated, the offsets rounded half to
// even (Python's round).
TEST(Image, EvalResizeThenCropFollowsTorchvision) {
  auto rc = data::resize_then_center_crop(300, 200, 224);
  EXPECT_EQ(rc.resized_width, 336);
  EXPECT_EQ(rc.resized_height, 224);
  EXPECT_EQ(rc.left, 56);
  EXPECT_EQ(rc.top, 0);
  rc = data::resize_then_center_crop(333, 500, 224);  // 224 * 500 / 333 = 336.34
  EXPECT_EQ(rc.resized_width, 224);
  EXPECT_EQ(rc.resized_height, 336);
  EXPECT_EQ(rc.top, 56);
  EXPECT_EQ(data::resize_then_center_crop(301, 200, 200).left, 50);  // round(50.5) = 50
  EXPECT_EQ(data::resize_then_center_crop(303, 200, 200).left, 52);  // round(51.5) = 52
  EXPECT_EQ(data::resize_then_center_crop(256, 240, 224).resized_width, 238);
  EXPECT_EQ(data::resize_then_center_crop(256, 240, 224).left, 7);
  rc = data::resize_then_center_crop(64, 64, 224);  // upscaled, nothing cropped
  EXPECT_EQ(rc.resized_width, 224);
  EXPECT_EQ(rc.left, 0);
}

// The other resize modes of preprocess_cfg: longest (timm's ResizeKeepRatio(S, longest=1), sides
// rounded half to even, then CenterCropOrPad: the padding before the picture is (S - side) // 2)
// and squash (S x S).
TEST(Image, EvalGeometryPerResizeMode) {
  using M = clipper::model::ResizeMode;
  auto g = data::eval_geometry(150, 97, 64, M::longest);  // 97 / (150 / 64) = 41.39
  EXPECT_EQ(g.resized_width, 64);
  EXPECT_EQ(g.resized_height, 41);
  EXPECT_EQ(g.left, 0);
  EXPECT_EQ(g.top, -11);                            // (64 - 41) // 2
  g = data::eval_geometry(45, 70, 64, M::longest);  // enlarged: 45 / (70 / 64) = 41.14
  EXPECT_EQ(g.resized_width, 41);
  EXPECT_EQ(g.resized_height, 64);
  EXPECT_EQ(g.left, -11);
  EXPECT_EQ(g.top, 0);
  g = data::eval_geometry(100, 36, 64, M::longest);  // 36 / (100 / 64) = 23.04; 20 + 21 padding
  EXPECT_EQ(g.resized_height, 23);
  EXPECT_EQ(g.top, -20);
  g = data::eval_geometry(150, 97, 64, M::squash);
  EXPECT_EQ(g.resized_width, 64);
  EXPECT_EQ(g.resized_height, 64);
  EXPECT_EQ(g.left, 0);
  EXPECT_EQ(g.top, 0);
  const auto s = data::eval_geometry(300, 200, 224, M::shortest);
  EXPECT_EQ(s.resized_width, 336);
  EXPECT_EQ(s.left, 56);
}

// A picture far longer than wide: the transform stays bounded (the centre square first).
TEST(Image, EvalTransformOfAnExtremeAspectRatioStaysSmall) {
  const std::string jpg = test::jpeg_bytes(4000, 20, 5, 90);
  data::TransformSpec spec;
  spec.size = 224;
  spec.train = false;
  data::ImageProcessor p(spec, 1 << 30);
  std::vector<std::uint8_t> out(224 * 224 * 3);
  std::string why;
  EXPECT_EQ(p.process(jpg, 0, out.data(), &why), data::ImageError::none) << why;
}

TEST(Image, JpegEvalTransformMatchesFullDecodeAndResize) {
  const std::string jpg = test::jpeg_bytes(256, 200, 3, 95);
  for (int S : {200, 180, 64, 24}) {  // 200: a copy; 180: bicubic; 64, 24: DCT-scaled by 3/8, 1/8
    data::TransformSpec spec;
    spec.size = S;
    spec.train = false;
    data::ImageProcessor p(spec, 1 << 30);
    std::vector<std::uint8_t> out(static_cast<std::size_t>(S) * S * 3);
    ASSERT_EQ(p.process(jpg, 0, out.data(), nullptr), data::ImageError::none);
    const auto ref = reference_eval(jpg, S);
    EXPECT_LT(mean_abs_diff(ref, out), S >= 180 ? 0.5 : S == 64 ? 4.0 : 7.0) << "S=" << S;
  }
}

TEST(Image, TrainTransformUsesTheSeededBox) {
  const std::string jpg = test::jpeg_bytes(240, 180, 4, 95);
  data::TransformSpec spec;
  spec.size = 96;
  data::ImageProcessor p(spec, 1 << 30);
  std::vector<std::uint8_t> a(96 * 96 * 3), b(96 * 96 * 3), c(96 * 96 * 3);
  ASSERT_EQ(p.process(jpg, 11, a.data(), nullptr), data::ImageError::none);
  ASSERT_EQ(p.process(jpg, 11, b.data(), nullptr), data::ImageError::none);
  ASSERT_EQ(p.process(jpg, 12, c.data(), nullptr), data::ImageError::none);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  const auto ref = reference(jpg, data::random_resized_crop_box(240, 180, spec, 11), 96);
  EXPECT_LT(mean_abs_diff(ref, a), 3.0);  // 1/2 DCT scaling (crop >= 192) vs full decode
}

TEST(Image, GreyCmykAlphaAndOtherCodecsBecomeRgb) {
  data::TransformSpec spec;
  spec.size = 16;
  spec.train = false;
  data::ImageProcessor p(spec, 1 << 30);
  std::vector<std::uint8_t> out(16 * 16 * 3);
  // Grey JPEG.
  cv::Mat grey(16, 16, CV_8UC1, cv::Scalar(77));
  ASSERT_EQ(p.process(test::encode(grey, ".jpg"), 0, out.data(), nullptr), data::ImageError::none);
  for (std::size_t i = 0; i < out.size(); i += 3) {
    ASSERT_NEAR(out[i], 77, 2);
    ASSERT_EQ(out[i], out[i + 1]);
    ASSERT_EQ(out[i], out[i + 2]);
  }
  // CMYK JPEG (Adobe, inverted as libjpeg-turbo writes it): C=255 M=0 Y=0 K=255 is red.
  std::vector<std::uint8_t> cmyk(16 * 16 * 4);
  for (std::size_t i = 0; i < cmyk.size(); i += 4) {
    cmyk[i] = 255;
    cmyk[i + 1] = 0;
    cmyk[i + 2] = 0;
    cmyk[i + 3] = 255;
  }
  tjhandle h = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  ASSERT_EQ(tjCompress2(h, cmyk.data(), 16, 0, 16, TJPF_CMYK, &buf, &size, TJSAMP_444, 95, 0), 0);
  const std::string cj(reinterpret_cast<char*>(buf), size);
  tjFree(buf);
  tjDestroy(h);
  ASSERT_EQ(p.process(cj, 0, out.data(), nullptr), data::ImageError::none);
  EXPECT_NEAR(out[0], 255, 4);
  EXPECT_NEAR(out[1], 0, 4);
  EXPECT_NEAR(out[2], 0, 4);
  // PNG with alpha: transparent pixels composited over white by default (issue 19.2); with
  // "drop", PIL's convert("RGB"): the colour under them shows. BGR(A) -> RGB.
  cv::Mat bgra(16, 16, CV_8UC4, cv::Scalar(10, 20, 30, 0));
  ASSERT_EQ(p.process(test::encode(bgra, ".png"), 0, out.data(), nullptr), data::ImageError::none);
  EXPECT_EQ(out[0], 255);
  EXPECT_EQ(out[1], 255);
  EXPECT_EQ(out[2], 255);
  data::TransformSpec drop = p.spec();
  drop.transparency = data::parse_transparency("drop", "test");
  data::ImageProcessor pd(drop, 1 << 20);
  ASSERT_EQ(pd.process(test::encode(bgra, ".png"), 0, out.data(), nullptr), data::ImageError::none);
  EXPECT_EQ(out[0], 30);
  EXPECT_EQ(out[1], 20);
  EXPECT_EQ(out[2], 10);
  // 16-bit grey PNG.
  cv::Mat g16(16, 16, CV_16UC1, cv::Scalar(257 * 200));
  ASSERT_EQ(p.process(test::encode(g16, ".png"), 0, out.data(), nullptr), data::ImageError::none);
  EXPECT_EQ(out[0], 200);
  // Lossless WebP.
  cv::Mat bgr(16, 16, CV_8UC3, cv::Scalar(1, 2, 3));
  ASSERT_EQ(p.process(test::encode(bgr, ".webp", {cv::IMWRITE_WEBP_QUALITY, 101}), 0, out.data(),
                      nullptr),
            data::ImageError::none);
  EXPECT_EQ(out[0], 3);
  EXPECT_EQ(out[2], 1);
}

TEST(Image, PixelLimitAndDamagedImages) {
  const cv::Mat big = test::test_image(300, 200, 1);
  int w = 0, h = 0;
  for (const char* ext : {".jpg", ".png", ".webp"}) {
    const auto bytes = test::encode(big, ext);
    ASSERT_TRUE(data::peek_size(bytes, &w, &h)) << ext;
    EXPECT_EQ(w, 300) << ext;
    EXPECT_EQ(h, 200) << ext;
    data::ImageProcessor p(data::TransformSpec{16, true}, 300 * 200 - 1);
    std::vector<std::uint8_t> out(16 * 16 * 3);
    std::string why;
    EXPECT_EQ(p.process(bytes, 0, out.data(), &why), data::ImageError::too_large) << ext;
    EXPECT_NE(why.find("300x200 pixels exceed data.max_image_pixels"), std::string::npos) << why;
    data::Image img;  // decode() (evaluation, shard tools) says the same as process()
    std::string decode_why;
    EXPECT_EQ(p.decode(bytes, &img, &decode_why), data::ImageError::too_large) << ext;
    EXPECT_EQ(decode_why, why) << ext;
    data::ImageProcessor ok(data::TransformSpec{16, true}, 300 * 200);
    EXPECT_EQ(ok.process(bytes, 0, out.data(), nullptr), data::ImageError::none) << ext;
    std::string cut = bytes.substr(0, bytes.size() / 2);
    EXPECT_EQ(ok.process(cut, 0, out.data(), &why), data::ImageError::corrupt) << ext;
    EXPECT_EQ(ok.decode(cut, &img, &decode_why), data::ImageError::corrupt) << ext;
  }
  data::ImageProcessor p(data::TransformSpec{16, true}, 1 << 30);
  std::vector<std::uint8_t> out(16 * 16 * 3);
  EXPECT_EQ(p.process("", 0, out.data(), nullptr), data::ImageError::corrupt);
  EXPECT_EQ(p.process(std::string(1000, '\xff'), 0, out.data(), nullptr),
            data::ImageError::corrupt);
  EXPECT_EQ(p.process("\xff\xd8\xff\xe0garbage", 0, out.data(), nullptr),
            data::ImageError::corrupt);
}

// Only JPEG, PNG and WebP reach a decoder; the rest (BMP, TIFF, ...) is refused by its magic.
TEST(Image, OtherCodecsAreRefusedBeforeDecoding) {
  const cv::Mat m = test::test_image(20, 20, 3);
  data::ImageProcessor p(data::TransformSpec{16, false}, 1 << 30);
  std::vector<std::uint8_t> out(16 * 16 * 3);
  std::vector<std::string> files = {test::encode(m, ".bmp"), test::encode(m, ".ppm"),
                                    test::encode(cv::Mat(8, 8, CV_8UC1, cv::Scalar(9)), ".pgm"),
                                    std::string("II*\0", 4) + "tiff", "GIF89a\x10\x00\x10\x00"};
  for (const auto& bytes : files) {
    const std::string ext = bytes.substr(0, 2);
    ASSERT_GT(bytes.size(), 4u) << ext;
    std::string why;
    EXPECT_EQ(p.process(bytes, 0, out.data(), &why), data::ImageError::corrupt) << ext;
    EXPECT_NE(why.find("not a JPEG, PNG or WebP"), std::string::npos) << why;
    data::Image img;
    EXPECT_EQ(p.decode(bytes, &img, &why), data::ImageError::corrupt) << ext;
    EXPECT_TRUE(img.pixels.empty()) << ext;
  }
}

// The pixel limit holds on the header for every accepted codec; a header whose size cannot be
// read is refused rather than decoded unchecked.
TEST(Image, PixelLimitBeforeAnyPixelBuffer) {
  std::string png = test::encode(test::test_image(8, 8, 1), ".png");
  const unsigned char huge[8] = {0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00};  // 65536^2
  std::memcpy(png.data() + 16, huge, 8);
  data::ImageProcessor p(data::TransformSpec{16, false}, 1 << 20);
  data::Image img;
  std::string why;
  EXPECT_EQ(p.decode(png, &img, &why), data::ImageError::too_large) << why;
  const std::string webp = test::encode(test::test_image(8, 8, 1), ".webp");
  EXPECT_EQ(p.decode(webp.substr(0, 16), &img, &why), data::ImageError::corrupt);
  EXPECT_NE(why.find("no readable size"), std::string::npos) << why;
  EXPECT_EQ(p.decode(png.substr(0, 20), &img, &why), data::ImageError::corrupt);
}

// A JPEG that libjpeg-turbo stops on: decode() reads the error before it replaces the handle
// (it read the destroyed handle before: AddressSanitizer's heap-use-after-free).
TEST(Image, DamagedJpegDecodeReportsAndRecovers) {
  const auto good = test::jpeg_bytes(64, 48, 5);
  data::ImageProcessor p(data::TransformSpec{16, false}, 1 << 30);
  data::Image img;
  std::string why;
  EXPECT_EQ(p.decode(good.substr(0, good.size() / 2), &img, &why), data::ImageError::corrupt);
  EXPECT_NE(why.find("JPEG"), std::string::npos) << why;
  ASSERT_EQ(p.decode(good, &img, &why), data::ImageError::none) << why;
  EXPECT_EQ(img.width, 64);
  EXPECT_EQ(img.height, 48);
}

// Issue 24, item 10: check() (a skipped sample's outcome, without the crop and resize, and for a
// JPEG decoded at 1/8 scale in grey) says what process() says, for the train and eval transforms:
// good images of every kind, the pixel limit, headers no decoder reads, JPEGs cut short or with
// damaged scan data, damaged PNGs.
TEST(Image, CheckSaysWhatProcessWould) {
  const cv::Mat colour = test::test_image(300, 200, 3);
  cv::Mat grey;
  cv::cvtColor(test::test_image(64, 48, 1), grey, cv::COLOR_BGR2GRAY);
  std::vector<std::string> files = {test::encode(colour, ".jpg"),
                                    test::encode(grey, ".jpg"),
                                    test::encode(colour, ".png"),
                                    test::encode(colour, ".webp"),
                                    "",
                                    "not an image",
                                    "\xff\xd8\xff\xe0garbage"};
  tjhandle h = tjInitCompress();
  std::vector<std::uint8_t> cmyk(32 * 32 * 4, 128);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  ASSERT_EQ(tjCompress2(h, cmyk.data(), 32, 0, 32, TJPF_CMYK, &buf, &size, TJSAMP_444, 95, 0), 0);
  files.emplace_back(reinterpret_cast<char*>(buf), size);
  tjFree(buf);
  tjDestroy(h);
  const std::size_t whole = files.size();
  for (std::size_t i = 0; i < whole; ++i) {
    const std::string f = files[i];
    if (f.size() < 64) continue;
    for (double cut : {0.1, 0.5, 0.9, 0.99}) files.push_back(f.substr(0, f.size() * cut));
    for (std::size_t at : {f.size() / 3, f.size() / 2, f.size() - 10}) {
      std::string damaged = f;
      for (std::size_t k = at; k < at + 8 && k < f.size(); ++k) damaged[k] = '\xff';
      files.push_back(damaged);
    }
  }
  int good = 0, bad = 0;
  for (const bool train : {true, false})
    for (const std::int64_t limit : {std::int64_t{1} << 30, std::int64_t{300 * 200 - 1}}) {
      data::ImageProcessor p(data::TransformSpec{24, train}, limit);
      std::vector<std::uint8_t> out(24 * 24 * 3);
      for (std::size_t i = 0; i < files.size(); ++i) {
        const auto want = p.process(files[i], 7, out.data(), nullptr);
        EXPECT_EQ(p.check(files[i], nullptr), want) << "file " << i << " train " << train;
        (want == data::ImageError::none ? good : bad) += 1;
      }
    }
  EXPECT_GT(good, 20);
  EXPECT_GT(bad, 20);
}

TEST(Image, ResizeAndEncodeForTheShardWriter) {
  data::Image img;
  img.width = 28;
  img.height = 28;
  img.channels = 1;
  img.pixels.assign(28 * 28, 128);
  const auto up = data::resize_shorter_side(img, 64);
  EXPECT_EQ(up.width, 64);
  EXPECT_EQ(up.channels, 1);
  const std::string jpg = data::encode_jpeg(up, 90);
  data::ImageProcessor p(data::TransformSpec{}, 1 << 30);
  data::Image back;
  ASSERT_EQ(p.decode(jpg, &back, nullptr, true), data::ImageError::none);
  EXPECT_EQ(back.width, 64);
  EXPECT_EQ(back.channels, 1);
  EXPECT_NEAR(back.pixels[100], 128, 2);
  data::Image wide;
  wide.width = 600;
  wide.height = 300;
  wide.channels = 3;
  wide.pixels.assign(600 * 300 * 3, 50);
  const auto r = data::resize_shorter_side(wide, 256);
  EXPECT_EQ(r.height, 256);
  EXPECT_EQ(r.width, 512);
}
