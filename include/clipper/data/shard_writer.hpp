#pragma once
// Writes WebDataset shards (POSIX tar through libarchive) and their sizes.json, and builds them
// from three kinds of input: a folder of images with .txt captions beside them, a CSV/TSV of
// (image path, caption) as OpenCLIP's csv input reads it, and IDX files (the MNIST format) with
// class names and caption templates. Images are re-encoded as JPEG with the shorter side resized
// to `resize` pixels (img2dataset's 256 by default; 0 keeps the size and copies JPEG bytes as-is).
// The three builders run on `threads` threads with the same output whatever their number, print a
// progress line, write <shard>_stats.json per shard and stats.json per run, and resume an
// interrupted run: a rerun keeps the complete shards and writes only the missing ones.
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "clipper/data/image.hpp"

struct archive;  // libarchive

namespace clipper::data {

struct ShardWriterOptions {
  std::string out_dir;
  std::string prefix = "shard";  // files PREFIX-00000.tar, PREFIX-00001.tar, ...
  int digits = 5;
  std::int64_t samples_per_shard = 10000;
  int resize = 256;              // shorter side in pixels (smaller images upscaled); 0: keep
  bool no_upscale = false;       // images already no larger than `resize` keep their size
  int quality = 95;              // JPEG quality
  int threads = 0;               // decode/resize/encode threads of the builders; 0: all cores
  double progress_every_s = 10;  // seconds between progress lines; 0: none
  bool resume = true;            // keep the complete shards an earlier run of the same inputs left
  std::int64_t max_image_pixels = 89478485;  // larger inputs are skipped as too_large
  // IDX inputs: a file whose header declares more bytes (header and data) is refused before it
  // is read; a gzipped one is decompressed only up to what its header declares.
  std::int64_t max_idx_bytes = std::int64_t{4} << 30;
  Transparency transparency;  // transparent pixels: composited over white unless told otherwise
  // CLIP_benchmark's names: shards 0.tar, 1.tar, ... (no prefix, no padding), keys s0000000, ...
  bool clip_benchmark_names = false;
};

// How shards_from_csv reads its table (OpenCLIP's --csv-img-key, --csv-caption-key,
// --csv-separator).
struct CsvOptions {
  std::string image_column = "filepath";
  std::string caption_column = "title";
  char separator = 0;  // 0: sniffed from the header (a tab, else a comma), else tab as OpenCLIP
  // Relative image paths: from the table's folder (default), or from the working directory as
  // OpenCLIP reads them.
  bool paths_from_cwd = false;
};

struct ShardsReport {
  std::int64_t samples = 0;
  std::int64_t skipped = 0;         // inputs that could not be read (missing caption, bad image)
  std::vector<std::string> shards;  // paths written, in order
  std::string pattern;  // the brace pattern that lists them, e.g. out/train-{00000..00005}.tar
  std::map<std::string, std::int64_t> failed;  // skipped inputs by reason (stats.json names)
  std::int64_t inputs = 0;                     // inputs listed
  std::int64_t kept_shards = 0;  // complete shards an interrupted earlier run left, kept
  int threads = 1;
  double seconds = 0;
  // "wrote 1,000 samples in 2 shard(s): PATTERN; 3 input(s) skipped (corrupt_image 2, ...);
  // 1 shard kept from an earlier run; 12.3 s, 81 samples/s on 4 threads".
  std::string summary() const;
};

class ShardWriter {
 public:
  explicit ShardWriter(ShardWriterOptions options);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Adds one sample: files KEY.EXT with the given bytes. The key must not contain a dot.
  void write(const std::string& key, const std::vector<std::pair<std::string, std::string>>& files);
  // Closes the current shard now (the next write() opens the next one) and returns its file
  // name; empty when none is open.
  std::string end_shard();
  // Samples in the open shard.
  std::int64_t in_current() const { return ar_ ? in_current_ : 0; }
  // The file name of shard `index` (PREFIX-00003.tar).
  std::string shard_name(std::int64_t index) const;
  // Continues after `kept`, complete shards of an earlier run (names and sample counts, in order).
  void resume_after(const std::vector<std::pair<std::string, std::int64_t>>& kept);
  // Closes the last shard and merges the counts into OUT_DIR/sizes.json (atomically); entries of
  // this prefix past the last shard written are dropped.
  ShardsReport finish();

 private:
  void open_next();
  void close_current();
  bool is_stale(const std::string& sizes_entry) const;

  ShardWriterOptions o_;
  ::archive* ar_ = nullptr;
  std::string current_, current_tmp_;
  std::int64_t in_current_ = 0;
  std::vector<std::pair<std::string, std::int64_t>> sizes_;
  ShardsReport report_;
  bool finished_ = false;
};

// The shorter side an image of w x h is stored at: `resize` (img2dataset's habit: up or down),
// its own with no_upscale when it is not larger, or its own with resize 0.
bool resizes(const ShardWriterOptions& o, int width, int height);

// The image bytes to store for an input image: re-encoded JPEG (resized) or, with resize 0 and a
// JPEG input, the bytes themselves. Throws InputError naming `what` when it cannot be decoded.
std::string prepare_image(const std::string& bytes, const ShardWriterOptions& o,
                          const std::string& what);

// A folder (searched recursively, in sorted order) of images (jpg, jpeg, png, webp, bmp) each with
// a caption file of the same stem and extension .txt. Each sample's .json holds its source path.
ShardsReport shards_from_folder(const std::string& folder, const ShardWriterOptions& o);

// A CSV (',' with "quoted" fields) or TSV (tab) file with a header row; the columns are named by
// `csv` (OpenCLIP: filepath, title). Each sample's .json holds its source (table, row, image path).
ShardsReport shards_from_csv(const std::string& table, const CsvOptions& csv,
                             const ShardWriterOptions& o);
ShardsReport shards_from_csv(const std::string& table, const std::string& image_column,
                             const std::string& caption_column, char separator,
                             const ShardWriterOptions& o);

// Class names and caption templates ("a photo of a {}."), as `--classes` gives them.
struct ClassFile {
  std::vector<std::string> classes, templates;
};
// A YAML file with `classes: [...]` and optional `templates: [...]` (each with "{}"; default
// "a photo of a {}."), the zero-shot class file format. Throws InputError naming the file.
ClassFile read_class_file(const std::string& classes_yaml);

// A class-per-subfolder tree (ImageNet's own train/ and val/): each subfolder of `folder` is a
// class, sorted names = labels 0..C-1 with C the count of `classes` (`classes_what` names where
// they came from in errors); every image under a class folder (searched recursively, sorted) is
// a sample with `jpg`, `cls` (its label), `txt` (a template, chosen from `seed` and the index,
// filled with its class name, as shards_from_idx) and `json` (its source path). An image directly
// in `folder` is an error.
ShardsReport shards_from_class_folders(const std::string& folder, const ClassFile& classes,
                                       const std::string& classes_what, const ShardWriterOptions& o,
                                       std::uint64_t seed = 0);

// Makes `out_dir` a CLIP_benchmark classification folder (its README's layout): writes
// classnames.txt, zeroshot_classification_templates.txt (each template's "{}" as "{c}") and
// <split>/nshards.txt for the `shards` that `report` wrote into <out_dir>/<split> with
// clip_benchmark_names. Atomic writes; InputError naming a class name with a line break.
void write_clip_benchmark_metadata(const std::string& out_dir, const std::string& split,
                                   const ClassFile& classes, const ShardsReport& report);

// IDX image and label files (gzip-compressed or not). `classes_yaml` holds `classes: [...]` and
// `templates: ["a photo of a {}.", ...]` (the zero-shot class file format); each sample's caption
// is one template (chosen from `seed` and the index) filled with its class name, and its class
// index goes in a `cls` entry. `limit` > 0 keeps the first `limit` samples.
ShardsReport shards_from_idx(const std::string& images, const std::string& labels,
                             const std::string& classes_yaml, const ShardWriterOptions& o,
                             std::uint64_t seed = 0, std::int64_t limit = 0);

// An IDX file (the MNIST format), gzip-compressed or not, read header first: its magic must be
// `magic` (0x00000803: unsigned-byte images, 3 dimensions; 0x00000801: labels, 1), and then the
// data its dimensions declare is read and nothing more, once header and data are known to fit in
// `max_bytes`. A gzip bomb costs at most the memory its header declares. Throws core::InputError
// naming the file.
struct IdxFile {
  std::vector<std::int64_t> dims;  // from the header
  std::string data;                // the bytes after the header
};
IdxFile read_idx_file(const std::string& path, std::uint32_t magic, std::int64_t max_bytes);

}  // namespace clipper::data
