#pragma once
// Streams one WebDataset shard (a tar, plain or compressed, from a file or a "pipe:CMD") and groups
// its files into samples by key with WebDataset's rule: the key is the path up to the first dot of
// the base name (the folder part included), the extension is the rest, lower-cased; consecutive
// files with the same key form one sample. Files without a dot in their base name, "__*__" files
// and non-regular entries are skipped, as WebDataset does. Data problems never throw: they end the
// stream with a status.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

struct archive;  // libarchive

namespace clipper::data {

struct RawSample {
  std::string key;
  std::vector<std::pair<std::string, std::string>> files;  // (extension, bytes), in tar order
  // The bytes stored under `ext`, or nullptr.
  const std::string* find(const std::string& ext) const;
  // The bytes of all its files.
  std::size_t bytes() const;
};

enum class ShardStatus {
  ok,           // read to its end
  unreadable,   // cannot be opened or is not a tar
  truncated,    // ended inside an entry or its header is damaged
  pipe_failed,  // pipe: command exited with a non-zero status
};
const char* to_string(ShardStatus s);

// Splits a tar member name into (key, extension) by WebDataset's rule; false when it has no key.
bool split_key(const std::string& name, std::string* key, std::string* ext);

class ShardReader {
 public:
  // Opens `url` (a path or "pipe:CMD"); an open failure shows in status() after the first next().
  // A pipe: command runs in a process group of its own, so a Ctrl-C or a signal to clipper's
  // group reaches clipper only; a command still running when the reader closes early is ended
  // with its group (SIGTERM, SIGKILL after 2 s).
  // A sample whose files together hold more than `max_sample_bytes` comes without files (its
  // bytes are skipped unread, so one huge sample cannot exhaust memory).
  explicit ShardReader(std::string url, std::int64_t max_sample_bytes = kMaxEntryBytes);
  ~ShardReader();
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  // The next complete sample; false at the end of the shard or after an error (see status()).
  bool next(RawSample& out);
  ShardStatus status() const { return status_; }
  const std::string& error() const { return error_; }
  const std::string& url() const { return url_; }

  // Entries larger than this are skipped (with the rest of their sample kept).
  static constexpr std::int64_t kMaxEntryBytes = std::int64_t{256} << 20;

 private:
  void open();
  void fail(ShardStatus s, std::string what);
  void close();

  // One tar entry of a sample: its key, extension and bytes (none when it is too large).
  struct Member {
    std::string key, ext, bytes;
    bool entry_too_large = false, sample_too_large = false;
  };
  enum class Read { member, skipped, stop };
  Read read_member(Member& m);
  bool read_bytes(std::int64_t size, std::string& bytes);
  void start_sample(std::string key);
  void add(Member& m);

  std::string url_;
  ::archive* ar_ = nullptr;
  int pipe_fd_ = -1;   // the read end of a pipe: command's stdout
  int pipe_pid_ = -1;  // its `sh -c`, the leader of its process group
  bool opened_ = false, done_ = false;
  ShardStatus status_ = ShardStatus::ok;
  std::string error_;
  RawSample pending_;
  bool has_pending_ = false;
  std::int64_t max_sample_bytes_;
  std::int64_t pending_bytes_ = 0;  // of pending_, counted even after its files were dropped
};

}  // namespace clipper::data
