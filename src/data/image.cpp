#include "clipper/data/image.hpp"

#include <turbojpeg.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "clipper/core/error.hpp"
#include "clipper/model/naflex_size.hpp"
#include "png_chunks.hpp"
#include "resize.hpp"
#include "rng.hpp"

namespace clipper::data {
namespace {

std::uint32_t be32(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         p[3];
}

bool is_jpeg(const std::string& b) {
  return b.size() >= 3 && static_cast<unsigned char>(b[0]) == 0xFF &&
         static_cast<unsigned char>(b[1]) == 0xD8 && static_cast<unsigned char>(b[2]) == 0xFF;
}

int round_half_even(double v) {
  return static_cast<int>(std::nearbyint(v));
}

// Adobe CMYK as libjpeg-turbo stores it (inverted): R = C*K/255 (libjpeg-turbo's own rule).
void cmyk_to_rgb(const std::uint8_t* in, std::uint8_t* out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i, in += 4, out += 3) {
    const unsigned k = in[3];
    out[0] = static_cast<std::uint8_t>((in[0] * k + 127) / 255);
    out[1] = static_cast<std::uint8_t>((in[1] * k + 127) / 255);
    out[2] = static_cast<std::uint8_t>((in[2] * k + 127) / 255);
  }
}

// 16-bit samples to 8 by their high byte, as PIL reads 16-bit PNGs.
cv::Mat to_depth8(const cv::Mat& m) {
  if (m.depth() == CV_8U) return m;
  if (m.depth() != CV_16U) {
    cv::Mat out;
    m.convertTo(out, CV_8U);
    return out;
  }
  cv::Mat out(m.rows, m.cols, CV_MAKETYPE(CV_8U, m.channels()));
  const int n = m.cols * m.channels();
  for (int y = 0; y < m.rows; ++y) {
    const auto* in = m.ptr<std::uint16_t>(y);
    auto* o = out.ptr<std::uint8_t>(y);
    for (int i = 0; i < n; ++i) o[i] = static_cast<std::uint8_t>(in[i] >> 8);
  }
  return out;
}

// BGRA over an opaque background, to RGB: PIL's Image.alpha_composite(background, image), bit for
// bit (its 7-bit fixed point and its division by 255).
cv::Mat composite_bgra(const cv::Mat& bgra, const Transparency& t) {
  cv::Mat out(bgra.rows, bgra.cols, CV_8UC3);
  for (int y = 0; y < bgra.rows; ++y) {
    const std::uint8_t* in = bgra.ptr<std::uint8_t>(y);
    std::uint8_t* o = out.ptr<std::uint8_t>(y);
    for (int x = 0; x < bgra.cols; ++x, in += 4, o += 3) {
      const std::uint32_t a = in[3];
      for (int c = 0; c < 3; ++c) {
        const std::uint32_t tmp =
            in[2 - c] * a * 128u + t.background[c] * (255u - a) * 128u + (0x80u << 7);
        o[c] = static_cast<std::uint8_t>((((tmp >> 8) + tmp) >> 8) >> 7);
      }
    }
  }
  return out;
}

// Brings an image from cv::imdecode(IMREAD_UNCHANGED) to 8-bit RGB (or grey when allowed), by the
// rule in image.hpp. OpenCV gives grey+alpha and palette/RGB with a transparent colour as BGRA.
cv::Mat to_rgb8(const cv::Mat& m, bool keep_grey, const Transparency& t) {
  const cv::Mat src = to_depth8(m);
  cv::Mat out;
  switch (src.channels()) {
    case 1:
      if (keep_grey) return src;
      cv::cvtColor(src, out, cv::COLOR_GRAY2RGB);
      return out;
    case 2: {  // grey + alpha (OpenCV builds without the BGRA expansion)
      cv::Mat bgra;
      cv::cvtColor(src, bgra, cv::COLOR_GRAY2BGRA);
      cv::Mat alpha;
      cv::extractChannel(src, alpha, 1);
      cv::insertChannel(alpha, bgra, 3);
      return t.rule != Transparency::Rule::composite ? to_rgb8(bgra, false, t)
                                                     : composite_bgra(bgra, t);
    }
    case 3:
      cv::cvtColor(src, out, cv::COLOR_BGR2RGB);
      return out;
    case 4:
      if (t.rule == Transparency::Rule::composite) return composite_bgra(src, t);
      cv::cvtColor(src, out, cv::COLOR_BGRA2RGB);
      return out;
  }
  return {};
}

// An image from cv::imdecode(IMREAD_UNCHANGED) with an alpha channel (BGRA, or grey + alpha) to
// 8-bit RGBA, for the openclip rule (PIL's LA resizes as La, which is RGBa with R = G = B).
cv::Mat to_rgba8(const cv::Mat& m) {
  const cv::Mat src = to_depth8(m);
  cv::Mat out;
  if (src.channels() == 4) {
    cv::cvtColor(src, out, cv::COLOR_BGRA2RGBA);
  } else {
    cv::cvtColor(src, out, cv::COLOR_GRAY2RGBA);
    cv::Mat alpha;
    cv::extractChannel(src, alpha, 1);
    cv::insertChannel(alpha, out, 3);
  }
  return out;
}

// PIL's RGBA -> RGBa (Convert.c rgbA2rgba): each colour times alpha / 255, rounded its way.
void premultiply(const cv::Mat& rgba, std::uint8_t* out) {
  for (int y = 0; y < rgba.rows; ++y) {
    const std::uint8_t* in = rgba.ptr<std::uint8_t>(y);
    for (int x = 0; x < rgba.cols; ++x, in += 4, out += 4) {
      const std::uint32_t a = in[3];
      for (int c = 0; c < 3; ++c) {
        const std::uint32_t tmp = in[c] * a + 128;
        out[c] = static_cast<std::uint8_t>(((tmp >> 8) + tmp) >> 8);
      }
      out[3] = in[3];
    }
  }
}

// PIL's RGBa -> RGBA (Convert.c rgba2rgbA): colour * 255 / alpha, truncated and clipped; alpha 0
// and 255 keep the colour.
void unpremultiply(std::uint8_t* p, std::size_t pixels) {
  for (std::size_t i = 0; i < pixels; ++i, p += 4) {
    const std::uint32_t a = p[3];
    if (a == 0 || a == 255) continue;
    for (int c = 0; c < 3; ++c) p[c] = static_cast<std::uint8_t>(std::min(255u, 255u * p[c] / a));
  }
}

}  // namespace

Transparency parse_transparency(const std::string& value, const std::string& where) {
  Transparency t;
  if (value == "drop") {
    t.rule = Transparency::Rule::drop;
  } else if (value == "openclip") {
    t.rule = Transparency::Rule::openclip;
  } else if (value == "black") {
    t.background = {0, 0, 0};
  } else if (value.size() == 7 && value[0] == '#' &&
             value.find_first_not_of("0123456789abcdefABCDEF", 1) == std::string::npos) {
    for (int c = 0; c < 3; ++c)
      t.background[c] =
          static_cast<std::uint8_t>(std::stoi(value.substr(1 + 2 * c, 2), nullptr, 16));
  } else if (value != "white") {
    throw core::InputError(where + " is '" + value +
                           "'; expected white, black, #RRGGBB (the background transparent pixels "
                           "are composited over), drop (PIL's convert(\"RGB\") on the decoded "
                           "picture) or openclip (the alpha kept through the resize and dropped "
                           "after it, as open_clip's preprocess on an RGBA picture)");
  }
  return t;
}

std::string transparency_name(const Transparency& t) {
  if (t.rule == Transparency::Rule::drop) return "drop";
  if (t.rule == Transparency::Rule::openclip) return "openclip";
  const auto& b = t.background;
  if (b[0] == 255 && b[1] == 255 && b[2] == 255) return "white";
  if (b[0] == 0 && b[1] == 0 && b[2] == 0) return "black";
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", b[0], b[1], b[2]);
  return buf;
}

CropBox random_resized_crop_box(int width, int height, const TransformSpec& spec,
                                std::uint64_t seed) {
  detail::Rng rng(seed);
  const double area = static_cast<double>(width) * height;
  const double log_lo = std::log(spec.ratio_min), log_hi = std::log(spec.ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * rng.uniform(spec.scale_min, spec.scale_max);
    const double aspect = std::exp(rng.uniform(log_lo, log_hi));
    const int w = round_half_even(std::sqrt(target_area * aspect));
    const int h = round_half_even(std::sqrt(target_area / aspect));
    if (w > 0 && h > 0 && w <= width && h <= height) {
      CropBox b;
      b.y = static_cast<int>(rng.below(static_cast<std::uint64_t>(height - h + 1)));
      b.x = static_cast<int>(rng.below(static_cast<std::uint64_t>(width - w + 1)));
      b.w = w;
      b.h = h;
      return b;
    }
  }
  // Fallback to a center crop (torchvision's rule).
  const double in_ratio = static_cast<double>(width) / height;
  int w, h;
  if (in_ratio < spec.ratio_min) {
    w = width;
    h = round_half_even(w / spec.ratio_min);
  } else if (in_ratio > spec.ratio_max) {
    h = height;
    w = round_half_even(h * spec.ratio_max);
  } else {
    w = width;
    h = height;
  }
  w = std::clamp(w, 1, width);
  h = std::clamp(h, 1, height);
  return CropBox{(width - w) / 2, (height - h) / 2, w, h};
}

ResizeThenCrop resize_then_center_crop(int width, int height, int S) {
  ResizeThenCrop r;
  const bool portrait = width <= height;
  const int shorter = portrait ? width : height, longer = portrait ? height : width;
  const int resized_longer =
      static_cast<int>(static_cast<double>(S) * longer / shorter);  // Python's int(): truncation
  r.resized_width = portrait ? S : resized_longer;
  r.resized_height = portrait ? resized_longer : S;
  // std::nearbyint rounds half to even in the default rounding mode, as Python's round().
  r.left = static_cast<int>(std::nearbyint((r.resized_width - S) / 2.0));
  r.top = static_cast<int>(std::nearbyint((r.resized_height - S) / 2.0));
  return r;
}

ResizeThenCrop eval_geometry(int width, int height, int S, model::ResizeMode mode) {
  if (mode == model::ResizeMode::shortest) return resize_then_center_crop(width, height, S);
  ResizeThenCrop r;
  if (mode == model::ResizeMode::squash) {
    r.resized_width = r.resized_height = S;
    return r;
  }
  // timm's ResizeKeepRatio.get_params with longest = 1, in the same float operations.
  const double ratio = std::max(static_cast<double>(height) / S, static_cast<double>(width) / S);
  r.resized_width = std::max(1, round_half_even(width / ratio));
  r.resized_height = std::max(1, round_half_even(height / ratio));
  // CenterCropOrPad: (S - side) // 2 of padding before the picture.
  r.left = -((S - std::min(S, r.resized_width)) / 2);
  r.top = -((S - std::min(S, r.resized_height)) / 2);
  return r;
}

bool peek_size(const std::string& bytes, int* width, int* height) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::size_t n = bytes.size();
  if (n >= 24 && std::memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0 &&
      std::memcmp(p + 12, "IHDR", 4) == 0) {
    *width = static_cast<int>(std::min<std::uint32_t>(be32(p + 16), 1u << 30));
    *height = static_cast<int>(std::min<std::uint32_t>(be32(p + 20), 1u << 30));
    return true;
  }
  if (n >= 30 && std::memcmp(p, "RIFF", 4) == 0 && std::memcmp(p + 8, "WEBP", 4) == 0) {
    if (std::memcmp(p + 12, "VP8 ", 4) == 0 && p[23] == 0x9d && p[24] == 0x01 && p[25] == 0x2a) {
      *width = (p[26] | (p[27] << 8)) & 0x3fff;
      *height = (p[28] | (p[29] << 8)) & 0x3fff;
      return true;
    }
    if (std::memcmp(p + 12, "VP8L", 4) == 0 && p[20] == 0x2f) {
      const std::uint32_t bits =
          p[21] | (p[22] << 8) | (p[23] << 16) | (std::uint32_t{p[24]} << 24);
      *width = static_cast<int>((bits & 0x3fff) + 1);
      *height = static_cast<int>(((bits >> 14) & 0x3fff) + 1);
      return true;
    }
    if (std::memcmp(p + 12, "VP8X", 4) == 0) {
      *width = static_cast<int>((p[24] | (p[25] << 8) | (p[26] << 16)) + 1);
      *height = static_cast<int>((p[27] | (p[28] << 8) | (p[29] << 16)) + 1);
      return true;
    }
    return false;
  }
  if (is_jpeg(bytes)) {
    tjhandle h = tjInitDecompress();
    int w = 0, hh = 0, ss = 0, cs = 0;
    const bool ok =
        h && tjDecompressHeader3(h, p, static_cast<unsigned long>(n), &w, &hh, &ss, &cs) == 0;
    if (h) tjDestroy(h);
    if (!ok) return false;
    *width = w;
    *height = hh;
    return true;
  }
  return false;
}

namespace {

bool is_png(const std::string& b) {
  return b.size() >= 8 && std::memcmp(b.data(), "\x89PNG\r\n\x1a\n", 8) == 0;
}

bool is_webp(const std::string& b) {
  return b.size() >= 12 && std::memcmp(b.data(), "RIFF", 4) == 0 &&
         std::memcmp(b.data() + 8, "WEBP", 4) == 0;
}

// PNG, WebP (and JPEG when libjpeg-turbo is unavailable) through OpenCV. Only those codecs are
// tried: OpenCV would also run its TIFF, JPEG 2000, PFM, ... decoders on whatever bytes come, and
// a shard is untrusted input. The pixel limit is checked on the header before any pixel buffer
// exists (an image whose size cannot be read is refused), and again on the decoded size.
ImageError decode_with_opencv(const std::string& bytes, std::int64_t max_pixels, cv::Mat* img,
                              std::string* why) {
  if (!is_png(bytes) && !is_webp(bytes) && !is_jpeg(bytes)) {
    if (why) *why = "not a JPEG, PNG or WebP image";
    return ImageError::corrupt;
  }
  int w = 0, hgt = 0;
  if (!peek_size(bytes, &w, &hgt) || w <= 0 || hgt <= 0) {
    if (why) *why = "damaged image header (no readable size)";
    return ImageError::corrupt;
  }
  if (static_cast<std::int64_t>(w) * hgt > max_pixels) {
    if (why)
      *why = std::to_string(w) + "x" + std::to_string(hgt) + " pixels exceed data.max_image_pixels";
    return ImageError::too_large;
  }
  if (is_png(bytes)) {
    // Found here, not by libpng, which would print it on stderr.
    if (std::string damage = detail::png_damage(bytes); !damage.empty()) {
      if (why) *why = damage;
      return ImageError::corrupt;
    }
  }
  // Colour profiles and text chunks change no pixel but make libpng warn on stderr.
  std::string quiet;
  if (is_png(bytes) && detail::png_has_noisy_chunks(bytes))
    quiet = detail::png_without_noisy_chunks(bytes);
  const std::string& src = quiet.empty() ? bytes : quiet;
  try {
    const cv::Mat raw(1, static_cast<int>(src.size()), CV_8UC1, const_cast<char*>(src.data()));
    *img = cv::imdecode(raw, cv::IMREAD_UNCHANGED | cv::IMREAD_IGNORE_ORIENTATION);
  } catch (const cv::Exception& e) {
    if (why) *why = std::string("decode: ") + e.what();
    return ImageError::corrupt;
  }
  if (img->empty()) {
    if (why) *why = "not a readable JPEG, PNG or WebP image";
    return ImageError::corrupt;
  }
  if (static_cast<std::int64_t>(img->cols) * img->rows > max_pixels) {
    if (why) *why = "image exceeds data.max_image_pixels";
    return ImageError::too_large;
  }
  return ImageError::none;
}

struct JpegHeader {
  int width = 0, height = 0, colorspace = 0;
};

// A libjpeg-turbo handle that failed may misread the next image: it is replaced.
void reset_handle(void** tj) {
  if (*tj) tjDestroy(static_cast<tjhandle>(*tj));
  *tj = tjInitDecompress();
}

// The header, and the pixel limit on it before any pixel buffer exists (the handle is reset when
// the header is unreadable).
ImageError read_jpeg_header(void** tj, const std::string& bytes, std::int64_t max_pixels,
                            JpegHeader* header, std::string* why) {
  auto* h = static_cast<tjhandle>(*tj);
  const auto* buf = reinterpret_cast<const unsigned char*>(bytes.data());
  int subsamp = 0;
  if (tjDecompressHeader3(h, buf, static_cast<unsigned long>(bytes.size()), &header->width,
                          &header->height, &subsamp, &header->colorspace) != 0 ||
      header->width <= 0 || header->height <= 0) {
    if (why) *why = std::string("JPEG header: ") + tjGetErrorStr2(h);
    reset_handle(tj);
    return ImageError::corrupt;
  }
  if (static_cast<std::int64_t>(header->width) * header->height > max_pixels) {
    if (why)
      *why = std::to_string(header->width) + "x" + std::to_string(header->height) +
             " pixels exceed data.max_image_pixels";
    return ImageError::too_large;
  }
  return ImageError::none;
}

// Decompresses into `dst` (w x h pixels of format pf); the handle is reset after any problem
// libjpeg-turbo reports. `corrupt` (with `why`) on a fatal error or a truncated stream; a warning
// alone keeps the image.
ImageError decompress_jpeg(void** tj, const std::string& bytes, std::uint8_t* dst, int w, int hgt,
                           int pf, std::string* why) {
  auto* h = static_cast<tjhandle>(*tj);
  const auto* buf = reinterpret_cast<const unsigned char*>(bytes.data());
  if (tjDecompress2(h, buf, static_cast<unsigned long>(bytes.size()), dst, w, w * tjPixelSize[pf],
                    hgt, pf, 0) == 0)
    return ImageError::none;
  const std::string msg = tjGetErrorStr2(h);  // read before the handle is reset
  const bool lost =
      tjGetErrorCode(h) == TJERR_FATAL || msg.find("Premature end") != std::string::npos;
  reset_handle(tj);
  if (!lost) return ImageError::none;
  if (why) *why = "JPEG: " + msg;
  return ImageError::corrupt;
}

}  // namespace

ImageProcessor::ImageProcessor(TransformSpec spec, std::int64_t max_pixels)
    : spec_(spec), max_pixels_(max_pixels), tj_(tjInitDecompress()) {}

ImageProcessor::~ImageProcessor() {
  if (tj_) tjDestroy(static_cast<tjhandle>(tj_));
}

namespace {

// The DCT-domain downscale for a JPEG: the smallest factor libjpeg-turbo offers that keeps the
// `box` at least `tw` x `th` (the size the transform resizes it to; 1/1 when none does).
std::pair<tjscalingfactor, double> dct_scale_for(const CropBox& box, int tw, int th) {
  int nf = 0;
  const tjscalingfactor* factors = tjGetScalingFactors(&nf);
  tjscalingfactor best{1, 1};
  double best_f = 1.0;
  for (int i = 0; i < nf; ++i) {
    const double f = static_cast<double>(factors[i].num) / factors[i].denom;
    if (f > 1.0 || f >= best_f) continue;
    if (std::floor(box.w * f) >= tw && std::floor(box.h * f) >= th) {
      best = factors[i];
      best_f = f;
    }
  }
  return {best, best_f};
}

// The crop box in a picture decoded at scale f (sw x sh pixels), at least one pixel each way.
cv::Rect scaled_box(const CropBox& box, double f, int sw, int sh) {
  const int x0 = std::clamp(static_cast<int>(std::lround(box.x * f)), 0, sw - 1);
  const int y0 = std::clamp(static_cast<int>(std::lround(box.y * f)), 0, sh - 1);
  const int x1 = std::clamp(static_cast<int>(std::lround((box.x + box.w) * f)), x0 + 1, sw);
  const int y1 = std::clamp(static_cast<int>(std::lround((box.y + box.h) * f)), y0 + 1, sh);
  return cv::Rect(x0, y0, x1 - x0, y1 - y0);
}

// The processor's buffers for one transform: the resized picture, a premultiplied RGBA copy and a
// packed copy of a strided region.
struct Buffers {
  std::vector<std::uint8_t>* resized;
  std::vector<std::uint8_t>* premultiplied;
};

// `src` (RGB, or RGBA under the openclip rule) resized to w x h with `filter`, into
// b.resized (`src` itself when it has that size already). RGBA resizes as PIL's resize does:
// premultiplied, resized, divided back.
cv::Mat resized(const cv::Mat& src, int w, int h, model::Interpolation filter, const Buffers& b) {
  if (src.cols == w && src.rows == h) return src;
  const int c = src.channels();
  const std::uint8_t* from = src.data;
  std::size_t stride = src.step;
  if (c == 4) {
    b.premultiplied->resize(src.total() * 4);
    premultiply(src, b.premultiplied->data());
    from = b.premultiplied->data();
    stride = static_cast<std::size_t>(src.cols) * 4;
  }
  b.resized->resize(static_cast<std::size_t>(w) * h * c);
  std::vector<std::uint8_t> packed;  // used only when the region's rows are not contiguous
  resize_u8(from, src.cols, src.rows, stride, c, b.resized->data(), w, h, filter, &packed);
  if (c == 4) unpremultiply(b.resized->data(), static_cast<std::size_t>(w) * h);
  return cv::Mat(h, w, CV_MAKETYPE(CV_8U, c), b.resized->data());
}

// The S x S window at (left, top) of `img` into `out` (RGB): black where it leaves the picture
// (CenterCropOrPad's fill 0), the alpha of an RGBA picture dropped (PIL's convert("RGB")).
void window_to_output(const cv::Mat& img, int left, int top, int S, std::uint8_t* out) {
  cv::Mat dst(S, S, CV_8UC3, out);
  const cv::Rect inside = cv::Rect(left, top, S, S) & cv::Rect(0, 0, img.cols, img.rows);
  if (inside.width != S || inside.height != S) dst.setTo(cv::Scalar::all(0));
  if (inside.empty()) return;
  cv::Mat to = dst(cv::Rect(inside.x - left, inside.y - top, inside.width, inside.height));
  if (img.channels() == 4)
    cv::cvtColor(img(inside), to, cv::COLOR_RGBA2RGB);
  else
    img(inside).copyTo(to);
}

// A crop resized to S x S into `out`; an RGB crop that needs resizing goes straight into `out`.
void crop_to_output(const cv::Mat& roi, int S, model::Interpolation filter, std::uint8_t* out,
                    const Buffers& b) {
  if (roi.channels() == 3 && (roi.cols != S || roi.rows != S)) {
    resize_u8(roi.data, roi.cols, roi.rows, roi.step, 3, out, S, S, filter, b.premultiplied);
    return;
  }
  window_to_output(resized(roi, S, S, filter, b), 0, 0, S, out);
}

// The evaluation transform on a decoded picture `img` (the original, or its DCT-scaled decode):
// resized to the size OpenCLIP resizes the original to (`g`, eval_geometry), then its S x S
// window into `out`. A picture resized over 16 times longer than S (resize mode shortest) is
// cropped to its centre square first (the old rule, within a pixel's shift of torchvision's), so
// that a hostile 1 x 100000 image cannot make the resize allocate S x 22 M pixels.
void eval_to_output(const cv::Mat& img, const ResizeThenCrop& g, const TransformSpec& spec,
                    std::uint8_t* out, const Buffers& b) {
  constexpr int kMaxAspect = 16;
  const int S = spec.size;
  if (std::max(g.resized_width, g.resized_height) > kMaxAspect * S) {
    const int side = std::min(img.cols, img.rows);
    const cv::Rect square((img.cols - side) / 2, (img.rows - side) / 2, side, side);
    return crop_to_output(img(square), S, spec.interpolation, out, b);
  }
  window_to_output(resized(img, g.resized_width, g.resized_height, spec.interpolation, b), g.left,
                   g.top, S, out);
}

// NaFlex: the size a `box_w` x `box_h` region becomes under the token budget; false (and `why`)
// for a region the rule cannot scale.
bool naflex_target(int box_w, int box_h, const TransformSpec& spec, int* tw, int* th,
                   std::string* why) {
  try {
    const auto [h, w] =
        model::naflex_image_size(box_h, box_w, spec.naflex_patch, spec.naflex_max_tokens);
    *th = static_cast<int>(h);
    *tw = static_cast<int>(w);
    return true;
  } catch (const core::InputError& e) {
    if (why) *why = e.what();
    return false;
  }
}

// NaFlex: `roi` resized to tw x th, cut into patches into `out` (row-major grid, each patch
// (row, column, channel)), zeros after the last patch, the alpha of an RGBA picture dropped.
void naflex_to_output(const cv::Mat& roi, int tw, int th, model::Interpolation filter,
                      const TransformSpec& spec, std::uint8_t* out, PatchGrid* grid,
                      const Buffers& b) {
  const cv::Mat img = resized(roi, tw, th, filter, b);
  cv::Mat rgb = img;
  if (img.channels() == 4) cv::cvtColor(img, rgb, cv::COLOR_RGBA2RGB);
  const int P = spec.naflex_patch, rows = th / P, cols = tw / P;
  const std::size_t row_bytes = static_cast<std::size_t>(P) * 3;
  std::uint8_t* dst = out;
  for (int gy = 0; gy < rows; ++gy)
    for (int gx = 0; gx < cols; ++gx)
      for (int r = 0; r < P; ++r, dst += row_bytes)
        std::memcpy(dst, rgb.ptr<std::uint8_t>(gy * P + r) + gx * row_bytes, row_bytes);
  std::memset(dst, 0, output_bytes(spec) - static_cast<std::size_t>(dst - out));
  if (grid) *grid = {rows, cols};
}

bool has_alpha(const cv::Mat& decoded) {
  return decoded.channels() == 2 || decoded.channels() == 4;
}

}  // namespace

std::size_t output_bytes(const TransformSpec& spec) {
  if (spec.naflex())
    return static_cast<std::size_t>(spec.naflex_max_tokens) * spec.naflex_patch *
           spec.naflex_patch * 3;
  return static_cast<std::size_t>(spec.size) * spec.size * 3;
}

ImageError ImageProcessor::process(const std::string& bytes, std::uint64_t seed, std::uint8_t* out,
                                   std::string* why, PatchGrid* grid) {
  if (is_jpeg(bytes) && tj_) return process_jpeg(bytes, seed, out, why, grid);
  cv::Mat img;
  if (const auto err = decode_with_opencv(bytes, max_pixels_, &img, why); err != ImageError::none)
    return err;
  // The openclip rule keeps the alpha through the transform (window_to_output drops it).
  const bool keep_alpha = spec_.transparency.rule == Transparency::Rule::openclip && has_alpha(img);
  img = keep_alpha ? to_rgba8(img) : to_rgb8(img, false, spec_.transparency);
  if (img.empty()) {
    if (why) *why = "unsupported channel layout";
    return ImageError::corrupt;
  }
  const Buffers b{&scratch3_, &scratch2_};
  if (spec_.naflex()) {
    const CropBox box = spec_.train ? random_resized_crop_box(img.cols, img.rows, spec_, seed)
                                    : CropBox{0, 0, img.cols, img.rows};
    int tw = 0, th = 0;
    if (!naflex_target(box.w, box.h, spec_, &tw, &th, why)) return ImageError::corrupt;
    naflex_to_output(img(cv::Rect(box.x, box.y, box.w, box.h)), tw, th,
                     spec_.train ? model::Interpolation::bicubic : spec_.interpolation, spec_, out,
                     grid, b);
    return ImageError::none;
  }
  if (!spec_.train) {
    eval_to_output(img, eval_geometry(img.cols, img.rows, spec_.size, spec_.resize_mode), spec_,
                   out, b);
    return ImageError::none;
  }
  const CropBox box = random_resized_crop_box(img.cols, img.rows, spec_, seed);
  crop_to_output(img(cv::Rect(box.x, box.y, box.w, box.h)), spec_.size,
                 model::Interpolation::bicubic, out, b);
  return ImageError::none;
}

// JPEG through libjpeg-turbo: the header first (the pixel limit holds before any buffer), then a
// decode at the DCT scale that still covers the crop, then the crop and the resize (in
// evaluation: the resize to eval_geometry's size, then its window).
ImageError ImageProcessor::process_jpeg(const std::string& bytes, std::uint64_t seed,
                                        std::uint8_t* out, std::string* why, PatchGrid* grid) {
  JpegHeader head;
  if (const auto err = read_jpeg_header(&tj_, bytes, max_pixels_, &head, why);
      err != ImageError::none)
    return err;
  const int w = head.width, hgt = head.height, cs = head.colorspace;
  // Evaluation resizes the whole picture (then keeps its window): the DCT scale must cover the
  // size it is resized to.
  const int S = spec_.size;
  const ResizeThenCrop g = eval_geometry(w, hgt, S, spec_.resize_mode);
  const CropBox box =
      spec_.train ? random_resized_crop_box(w, hgt, spec_, seed) : CropBox{0, 0, w, hgt};
  // NaFlex: the region's size under the token budget, decided from the header.
  int tw = S, th = S;
  if (spec_.naflex() && !naflex_target(box.w, box.h, spec_, &tw, &th, why))
    return ImageError::corrupt;
  const auto [scale, f] =
      spec_.naflex() ? dct_scale_for(box, std::min(tw, box.w), std::min(th, box.h))
      : spec_.train
          ? dct_scale_for(box, S, S)
          : dct_scale_for(box, std::min(g.resized_width, w), std::min(g.resized_height, hgt));
  const int sw = TJSCALED(w, scale), sh = TJSCALED(hgt, scale);
  const bool cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
  const int pf = cmyk ? TJPF_CMYK : TJPF_RGB;
  const int bpp = tjPixelSize[pf];
  scratch_.resize(static_cast<std::size_t>(sw) * sh * bpp);
  if (const auto err = decompress_jpeg(&tj_, bytes, scratch_.data(), sw, sh, pf, why);
      err != ImageError::none)
    return err;
  std::uint8_t* rgb = scratch_.data();
  if (cmyk) {
    scratch2_.resize(static_cast<std::size_t>(sw) * sh * 3);
    cmyk_to_rgb(scratch_.data(), scratch2_.data(), static_cast<std::size_t>(sw) * sh);
    rgb = scratch2_.data();
  }
  const cv::Mat img(sh, sw, CV_8UC3, rgb);
  // A JPEG has no alpha: the premultiplied buffer is only the packed copy of a strided crop.
  const Buffers b{&scratch3_, &scratch4_};
  if (spec_.naflex())
    naflex_to_output(img(scaled_box(box, f, sw, sh)), tw, th,
                     spec_.train ? model::Interpolation::bicubic : spec_.interpolation, spec_, out,
                     grid, b);
  else if (!spec_.train)
    eval_to_output(img, g, spec_, out, b);
  else
    crop_to_output(img(scaled_box(box, f, sw, sh)), S, model::Interpolation::bicubic, out, b);
  return ImageError::none;
}

ImageError ImageProcessor::check(const std::string& bytes, std::string* why) {
  if (is_jpeg(bytes) && tj_) {
    JpegHeader head;
    if (const auto err = read_jpeg_header(&tj_, bytes, max_pixels_, &head, why);
        err != ImageError::none)
      return err;
    int nf = 0;
    const tjscalingfactor* factors = tjGetScalingFactors(&nf);
    tjscalingfactor least{1, 1};
    for (int i = 0; i < nf; ++i)
      if (factors[i].num * least.denom < least.num * factors[i].denom) least = factors[i];
    const bool cmyk = head.colorspace == TJCS_CMYK || head.colorspace == TJCS_YCCK;
    const int pf = cmyk ? TJPF_CMYK : TJPF_GRAY;  // libjpeg has no CMYK -> grey conversion
    const int sw = TJSCALED(head.width, least), sh = TJSCALED(head.height, least);
    scratch_.resize(static_cast<std::size_t>(sw) * sh * tjPixelSize[pf]);
    return decompress_jpeg(&tj_, bytes, scratch_.data(), sw, sh, pf, why);
  }
  cv::Mat img;
  if (const auto err = decode_with_opencv(bytes, max_pixels_, &img, why); err != ImageError::none)
    return err;
  if (to_rgb8(img, false, spec_.transparency).empty()) {
    if (why) *why = "unsupported channel layout";
    return ImageError::corrupt;
  }
  return ImageError::none;
}

ImageError ImageProcessor::decode(const std::string& bytes, Image* out, std::string* why,
                                  bool keep_grey) {
  if (is_jpeg(bytes) && tj_) {
    JpegHeader head;
    if (const auto err = read_jpeg_header(&tj_, bytes, max_pixels_, &head, why);
        err != ImageError::none)
      return err;
    const int w = head.width, hgt = head.height, cs = head.colorspace;
    const bool cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
    const bool grey = keep_grey && cs == TJCS_GRAY;
    const int pf = cmyk ? TJPF_CMYK : grey ? TJPF_GRAY : TJPF_RGB;
    scratch_.resize(static_cast<std::size_t>(w) * hgt * tjPixelSize[pf]);
    if (const auto err = decompress_jpeg(&tj_, bytes, scratch_.data(), w, hgt, pf, why);
        err != ImageError::none)
      return err;
    out->width = w;
    out->height = hgt;
    out->channels = grey ? 1 : 3;
    out->pixels.resize(static_cast<std::size_t>(w) * hgt * out->channels);
    if (cmyk)
      cmyk_to_rgb(scratch_.data(), out->pixels.data(), static_cast<std::size_t>(w) * hgt);
    else
      std::memcpy(out->pixels.data(), scratch_.data(), out->pixels.size());
    return ImageError::none;
  }
  cv::Mat img;
  if (const auto err = decode_with_opencv(bytes, max_pixels_, &img, why); err != ImageError::none)
    return err;
  img = to_rgb8(img, keep_grey, spec_.transparency);
  if (img.empty() || !img.isContinuous()) img = img.clone();
  out->width = img.cols;
  out->height = img.rows;
  out->channels = img.channels();
  out->pixels.assign(img.data, img.data + img.total() * img.elemSize());
  return ImageError::none;
}

Image resize_shorter_side(const Image& in, int size) {
  if (size <= 0 || in.width <= 0 || in.height <= 0) return in;
  const int shorter = std::min(in.width, in.height);
  int w = in.width, h = in.height;
  if (in.width <= in.height) {
    w = size;
    h = std::max(1, static_cast<int>(std::lround(static_cast<double>(in.height) * size / shorter)));
  } else {
    h = size;
    w = std::max(1, static_cast<int>(std::lround(static_cast<double>(in.width) * size / shorter)));
  }
  if (w == in.width && h == in.height) return in;
  const int type = in.channels == 1 ? CV_8UC1 : CV_8UC3;
  const cv::Mat src(in.height, in.width, type, const_cast<std::uint8_t*>(in.pixels.data()));
  Image out;
  out.width = w;
  out.height = h;
  out.channels = in.channels;
  out.pixels.resize(static_cast<std::size_t>(w) * h * in.channels);
  cv::Mat dst(h, w, type, out.pixels.data());
  const int interp = shorter >= 2 * size ? cv::INTER_AREA : cv::INTER_CUBIC;
  cv::resize(src, dst, cv::Size(w, h), 0, 0, interp);
  return out;
}

std::string encode_jpeg(const Image& image, int quality) {
  tjhandle h = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  const bool grey = image.channels == 1;
  const int rc =
      tjCompress2(h, image.pixels.data(), image.width, 0, image.height, grey ? TJPF_GRAY : TJPF_RGB,
                  &buf, &size, grey ? TJSAMP_GRAY : TJSAMP_420, quality, 0);
  std::string out;
  if (rc == 0) out.assign(reinterpret_cast<const char*>(buf), size);
  const std::string err = rc == 0 ? "" : tjGetErrorStr2(h);
  if (buf) tjFree(buf);
  tjDestroy(h);
  if (rc != 0) throw std::runtime_error("JPEG encode failed: " + err);
  return out;
}

}  // namespace clipper::data
