#pragma once
// Writes WebDataset shards (POSIX tar through libarchive) and their sizes.json, and builds them
// from three kinds of input: a folder of images with .txt captions beside them, a CSV/TSV of
// (image path, caption) as OpenCLIP's csv input reads it, and IDX files (the MNIST format) with
// class names and caption templates. Images are re-encoded as JPEG with the shorter side resized
// to `resize` pixels (img2dataset's 256 by default; 0 keeps the size and copies JPEG bytes as-is).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

struct archive;  // libarchive

namespace clipper::data {

struct ShardWriterOptions {
  std::string out_dir;
  std::string prefix = "shard";  // files PREFIX-00000.tar, PREFIX-00001.tar, ...
  int digits = 5;
  std::int64_t samples_per_shard = 10000;
  int resize = 256;  // shorter side in pixels; 0: keep
  int quality = 95;  // JPEG quality
};

struct ShardsReport {
  std::int64_t samples = 0;
  std::int64_t skipped = 0;         // inputs that could not be read (missing caption, bad image)
  std::vector<std::string> shards;  // paths written, in order
  std::string pattern;  // the brace pattern that lists them, e.g. out/train-{00000..00005}.tar
};

class ShardWriter {
 public:
  explicit ShardWriter(ShardWriterOptions options);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Adds one sample: files KEY.EXT with the given bytes. The key must not contain a dot.
  void write(const std::string& key, const std::vector<std::pair<std::string, std::string>>& files);
  // Closes the last shard and merges the counts into OUT_DIR/sizes.json (atomically).
  ShardsReport finish();

 private:
  void open_next();
  void close_current();

  ShardWriterOptions o_;
  ::archive* ar_ = nullptr;
  std::string current_, current_tmp_;
  std::int64_t in_current_ = 0;
  std::vector<std::pair<std::string, std::int64_t>> sizes_;
  ShardsReport report_;
  bool finished_ = false;
};

// The image bytes to store for an input image: re-encoded JPEG (resized) or, with resize 0 and a
// JPEG input, the bytes themselves. Throws InputError naming `what` when it cannot be decoded.
std::string prepare_image(const std::string& bytes, const ShardWriterOptions& o,
                          const std::string& what);

// A folder (searched recursively, in sorted order) of images (jpg, jpeg, png, webp, bmp) each with
// a caption file of the same stem and extension .txt.
ShardsReport shards_from_folder(const std::string& folder, const ShardWriterOptions& o);

// A CSV (',' with "quoted" fields) or TSV (tab) file with a header row; `image_column` and
// `caption_column` name the columns (OpenCLIP: filepath, title). Relative paths are taken from the
// table's folder.
ShardsReport shards_from_csv(const std::string& table, const std::string& image_column,
                             const std::string& caption_column, char separator,
                             const ShardWriterOptions& o);

// IDX image and label files (gzip-compressed or not). `classes_yaml` holds `classes: [...]` and
// `templates: ["a photo of a {}.", ...]` (the zero-shot class file format); each sample's caption
// is one template (chosen from `seed` and the index) filled with its class name, and its class
// index goes in a `cls` entry. `limit` > 0 keeps the first `limit` samples.
ShardsReport shards_from_idx(const std::string& images, const std::string& labels,
                             const std::string& classes_yaml, const ShardWriterOptions& o,
                             std::uint64_t seed = 0, std::int64_t limit = 0);

// Reads a file, gunzipping it when it starts with the gzip magic.
std::string read_maybe_gzip(const std::string& path);

}  // namespace clipper::data
