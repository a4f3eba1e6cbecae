#pragma once
// Image decode and the OpenCLIP transforms, producing model-ready uint8 RGB pixels (H, W, 3).
// JPEG goes through libjpeg-turbo with DCT-domain downscaling: the decoder scales by the smallest
// of libjpeg-turbo's factors (1/8 .. 1) that still leaves the crop at least as large as the output,
// so the bicubic resize after it never upsamples what the full decode would have resolved. The
// resize uses PIL's bicubic filter (antialiased), as OpenCLIP's transforms on PIL images do.
// PNG and WebP go through cv::imdecode. Every image becomes 8-bit RGB by one rule (docs/data.md,
// "Colour, transparency and orientation"), the same in the shard writer, the loader and embed:
//   - transparency (an alpha channel, a palette or RGB PNG with a transparent colour, grey with
//     alpha) is composited over a background, white by default (img2dataset's and transformers'
//     CLIPImageProcessor's rule), pixel for pixel PIL's alpha_composite; or dropped as PIL's
//     convert("RGB") does on the decoded picture (drop: open_clip_train's webdataset and
//     ImageFolder loading); or kept through the transform and dropped after it, as open_clip's
//     preprocess does on an RGBA picture (openclip: PIL's premultiplied-alpha resize, then
//     convert("RGB"));
//   - grey is replicated; CMYK JPEGs convert as PIL does, (255-C)(255-K)/255;
//   - 16-bit samples keep their high byte, as PIL reads 16-bit RGB PNGs (PIL clips 16-bit grey to
//     255 instead; clipper scales it like colour);
//   - EXIF orientation is ignored, as PIL.Image.open, webdataset and open_clip's preprocess do.
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "clipper/model/preprocess.hpp"

namespace clipper::data {

enum class ImageError { none, corrupt, too_large };

// What becomes of transparent pixels (data.transparency, --transparency).
struct Transparency {
  // composite: over `background`. drop: PIL's convert("RGB") on the decoded picture, the colour
  // under transparent pixels shows. openclip: the picture keeps its alpha through the crop and
  // resize (PIL's resize of RGBA: premultiplied, then divided back) and loses it after, as
  // open_clip's image_transform on an RGBA PIL image; on a full decode (no transform: the shard
  // writer) it is drop.
  enum class Rule { composite, drop, openclip };
  Rule rule = Rule::composite;
  std::array<std::uint8_t, 3> background{255, 255, 255};  // composite: over this (RGB)
};
// "white" (the default), "black", "#RRGGBB", "drop" or "openclip"; `where` names the key or flag
// in the InputError for anything else.
Transparency parse_transparency(const std::string& value, const std::string& where);
// The spelling parse_transparency reads back ("white", "#102030", "drop", "openclip").
std::string transparency_name(const Transparency& t);

struct TransformSpec {
  int size = 224;     // output side (square)
  bool train = true;  // true: RandomResizedCrop (bicubic); false: OpenCLIP's evaluation transform
  double scale_min = 0.9, scale_max = 1.0;
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;
  Transparency transparency;
  // Evaluation only, the model's preprocess_cfg (model/preprocess.hpp): how the picture becomes
  // S x S (eval_geometry) and the resize filter. Training is bicubic, as open_clip's.
  model::ResizeMode resize_mode = model::ResizeMode::shortest;
  model::Interpolation interpolation = model::Interpolation::bicubic;
  // NaFlex (both > 0): instead of S x S, the picture (evaluation) or the random crop (training)
  // keeps its aspect ratio and is resized to the largest multiple of `naflex_patch` whose patch
  // count is at most `naflex_max_tokens` (model/naflex_size.hpp), with `interpolation` in
  // evaluation and bicubic in training, then cut into patches: the output is naflex_max_tokens
  // patches of naflex_patch^2 * 3 bytes, (row, column, channel) inside a patch, patches in
  // row-major grid order, zeros after the last one.
  int naflex_patch = 0;
  std::int64_t naflex_max_tokens = 0;
  bool naflex() const { return naflex_patch > 0 && naflex_max_tokens > 0; }
};

// The bytes ImageProcessor::process writes per picture: size^2 * 3, or NaFlex's
// naflex_max_tokens * naflex_patch^2 * 3.
std::size_t output_bytes(const TransformSpec& spec);

// A NaFlex picture's patch grid: rows x columns of patches, the first rows * cols output patches.
struct PatchGrid {
  int rows = 0, cols = 0;
};

// A crop in source pixels.
struct CropBox {
  int x = 0, y = 0, w = 0, h = 0;
};

// torchvision's RandomResizedCrop.get_params (10 tries, then the center crop that fits the
// ratio range), drawn from a generator seeded with `seed`.
CropBox random_resized_crop_box(int width, int height, const TransformSpec& spec,
                                std::uint64_t seed);
// OpenCLIP's evaluation transform, torchvision's Resize(S) then CenterCrop(S): a `width` x
// `height` picture is resized to `resized_width` x `resized_height` (the shorter side S, the longer
// int(S * long / short)), and the S x S square at (left, top) is kept, its offsets rounded half
// to even as Python's round().
struct ResizeThenCrop {
  int resized_width = 0, resized_height = 0, left = 0, top = 0;
};
ResizeThenCrop resize_then_center_crop(int width, int height, int S);
// OpenCLIP's evaluation transform for `mode`: the picture is resized to resized_width x
// resized_height, and the S x S window at (left, top) of it is the output, where pixels outside
// the resized picture are black (fill 0). shortest: resize_then_center_crop. longest: timm's
// ResizeKeepRatio(S, longest=1), both sides round(side / ratio) with ratio = longer / S (Python's
// round), then CenterCropOrPad(S): left = -((S - resized_width) / 2), top alike (negative: the
// padding). squash: Resize((S, S)), no window offset.
ResizeThenCrop eval_geometry(int width, int height, int S, model::ResizeMode mode);

// An interleaved 8-bit image (channels 1 or 3, RGB order).
struct Image {
  int width = 0, height = 0, channels = 0;
  std::vector<std::uint8_t> pixels;
};

// Reads the width and height from the header of a JPEG, PNG or WebP without decoding; false for
// other formats or a damaged header.
bool peek_size(const std::string& bytes, int* width, int* height);

// One per thread: holds the libjpeg-turbo handles and scratch buffers.
class ImageProcessor {
 public:
  ImageProcessor(TransformSpec spec, std::int64_t max_pixels);
  ~ImageProcessor();
  ImageProcessor(const ImageProcessor&) = delete;
  ImageProcessor& operator=(const ImageProcessor&) = delete;

  const TransformSpec& spec() const { return spec_; }
  // Decodes, crops (train: random box from `seed`; eval: center) and resizes (bicubic) into
  // `out` (output_bytes(spec) bytes, RGB). `why` gets a description of a failure. NaFlex
  // (spec.naflex()): patches, their grid in `grid`.
  ImageError process(const std::string& bytes, std::uint64_t seed, std::uint8_t* out,
                     std::string* why, PatchGrid* grid = nullptr);

  // What process() would make of `bytes`, with the least work that finds it out exactly: the
  // header; then for a JPEG its entropy-coded data decoded at the smallest DCT scale into grey
  // (every marker, table and scan is read as by a full decode, so every error process() meets is
  // met: only the inverse DCT, upsampling and colour conversion are smaller), else a full decode.
  // No crop, no resize. For samples that are skipped but must be counted as good or bad.
  ImageError check(const std::string& bytes, std::string* why);

  // Full decode to RGB (or grey when `keep_grey` and the source is grey).
  ImageError decode(const std::string& bytes, Image* out, std::string* why, bool keep_grey = false);

 private:
  ImageError process_jpeg(const std::string& bytes, std::uint64_t seed, std::uint8_t* out,
                          std::string* why, PatchGrid* grid);

  TransformSpec spec_;
  std::int64_t max_pixels_;
  void* tj_ = nullptr;
  std::vector<std::uint8_t> scratch_, scratch2_, scratch3_, scratch4_;
};

// Resizes so that the shorter side is `size` (bicubic; area filter when shrinking by 2x or more).
Image resize_shorter_side(const Image& in, int size);
// Encodes with libjpeg-turbo (4:2:0 for colour, greyscale for 1 channel).
std::string encode_jpeg(const Image& image, int quality);

}  // namespace clipper::data
