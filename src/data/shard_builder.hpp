#pragma once
// Internal to the shard writer: the parallel, resumable pipeline behind shards_from_folder, _csv
// and _idx. Inputs are prepared (decoded, resized, re-encoded) on N threads in blocks and written
// in input order, so the shards are the same whatever N is. Each shard gets a <shard>_stats.json
// written after the shard itself is complete and durable; a rerun keeps every shard whose stats
// say it came from the same inputs and options and rewrites the rest (see docs/data.md).
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "clipper/data/image.hpp"
#include "clipper/data/shard_writer.hpp"

namespace clipper::data::detail {

// Why an input was skipped: one name each in the stats and the warnings.
enum class InputFailure {
  none,
  unreadable,
  missing_caption,
  corrupt_image,
  too_large,
  unsupported_format,
  bad_row
};
const char* to_string(InputFailure f);

struct Prepared {
  InputFailure failure = InputFailure::none;
  std::string message;  // names the input and says what is wrong
  std::vector<std::pair<std::string, std::string>> files;
  std::string key;            // empty: the running sample number
  int width = 0, height = 0;  // of the input image
  std::int64_t caption_chars = 0;
};

struct InputSet {
  std::int64_t size = 0;
  std::string what;        // "the folder 'x'", for messages
  std::string options_id;  // everything besides the items that decides the output bytes
  // A short identity of item i (path, caption, ...): the resume check's fingerprint.
  std::function<std::string(std::int64_t)> identity;
  // Thread-safe given one ImageProcessor per thread.
  std::function<Prepared(std::int64_t, ImageProcessor&)> prepare;
};

ShardsReport build_shards(const InputSet& in, const ShardWriterOptions& o);

// The image bytes to store, or a failure: unsupported_format when the bytes carry no known image
// signature, corrupt_image when the decoder rejects them, too_large past o.max_image_pixels.
InputFailure prepare_image_bytes(const std::string& bytes, const ShardWriterOptions& o,
                                 ImageProcessor& proc, std::string* out, int* width, int* height,
                                 std::string* why);

}  // namespace clipper::data::detail
