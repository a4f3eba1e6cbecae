#pragma once
// OpenCLIP's byte-level BPE over a merges file (private to src/tokenizer).
#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace clipper::tokenizer::detail {

class ClipBpe {
 public:
  // Reads `bpe_simple_vocab_16e6.txt.gz` (gzip or plain text): merges on lines 1..48894.
  explicit ClipBpe(const std::string& vocab_path);

  // Appends the ids of one pre-token given as UTF-8 bytes. Thread-safe (a sharded cache).
  void encode_piece(std::string_view piece, std::vector<std::int64_t>& out) const;

  std::int64_t vocab_size() const { return static_cast<std::int64_t>(vocab_size_); }
  std::int64_t start_id() const { return start_id_; }
  std::int64_t end_id() const { return end_id_; }

 private:
  struct Merge {
    std::uint32_t rank;
    std::int32_t merged;
  };
  void bpe(std::string_view piece, std::vector<std::int32_t>& ids) const;
  // The same result in O(n log n) for long pieces (a heap of candidate merges).
  void bpe_long(std::vector<std::int32_t>& word) const;
  const Merge* find_merge(std::int32_t a, std::int32_t b) const;

  std::array<std::int32_t, 256> byte_id_{};  // id of the byte's character; +256 for its </w> form
  std::unordered_map<std::uint64_t, Merge> merges_;
  std::size_t vocab_size_ = 0;
  std::int64_t start_id_ = 0, end_id_ = 0;

  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<std::int32_t>> map;
  };
  static constexpr std::size_t kShards = 64;
  static constexpr std::size_t kShardCapacity = 8192;  // entries; a full shard starts over
  static constexpr std::size_t kMaxCachedPiece = 128;  // bytes
  static constexpr std::size_t kLongPiece = 48;        // bytes; longer ones use bpe_long
  mutable std::array<Shard, kShards> cache_;
};

}  // namespace clipper::tokenizer::detail
