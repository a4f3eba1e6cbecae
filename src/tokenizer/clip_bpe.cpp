#include "clip_bpe.hpp"

#include <zlib.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <queue>

#include "clipper/core/error.hpp"
#include "clipper/tokenizer/clip_vocab.hpp"
#include "utf8.hpp"

namespace clipper::tokenizer::detail {
namespace {

constexpr std::size_t kMergeCount = 49152 - 256 - 2;  // 48,894 merges, as open_clip reads them

std::string read_gzip_or_text(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");  // reads plain files too
  if (!f) throw core::InputError("cannot open the CLIP BPE vocabulary " + path);
  std::string data;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) data.append(buf, static_cast<std::size_t>(n));
  int err = Z_OK;
  const char* msg = gzerror(f, &err);
  const std::string what = msg ? msg : "";
  gzclose(f);
  if (n < 0 || (err != Z_OK && err != Z_STREAM_END))
    throw core::InputError("cannot read the CLIP BPE vocabulary " + path + ": " + what);
  return data;
}

// GPT-2's byte-to-character table: printable bytes map to themselves, the others to U+0100...
std::array<char32_t, 256> byte_chars(std::array<int, 256>& order) {
  std::array<char32_t, 256> chars{};
  std::vector<int> bs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  std::array<bool, 256> printable{};
  for (int b : bs) printable[b] = true, chars[b] = static_cast<char32_t>(b);
  int extra = 0;
  for (int b = 0; b < 256; ++b)
    if (!printable[b]) bs.push_back(b), chars[b] = static_cast<char32_t>(256 + extra++);
  for (int i = 0; i < 256; ++i) order[i] = bs[i];
  return chars;
}

inline std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) |
         static_cast<std::uint32_t>(b);
}

}  // namespace

}  // namespace clipper::tokenizer::detail

namespace clipper::tokenizer {

ClipVocabulary read_clip_vocabulary(const std::string& vocab_path) {
  using detail::append_utf8;
  const std::string data = detail::read_gzip_or_text(vocab_path);
  std::array<int, 256> order{};
  const auto chars = detail::byte_chars(order);

  // The vocabulary in open_clip's order: byte characters, the same with </w>, the merged
  // strings, then the two special tokens. A string listed twice keeps its last id (dict()).
  ClipVocabulary v;
  auto& vocab = v.tokens;
  auto& merges = v.merges;
  vocab.reserve(2 * 256 + detail::kMergeCount + 2);
  for (int i = 0; i < 256; ++i) {
    std::string s;
    append_utf8(s, chars[order[i]]);
    vocab.push_back(s);
  }
  for (int i = 0; i < 256; ++i) vocab.push_back(vocab[i] + "</w>");
  merges.reserve(detail::kMergeCount);
  std::size_t pos = data.find('\n');  // line 0 is a version header
  std::size_t line_no = 1;
  while (pos != std::string::npos && merges.size() < detail::kMergeCount) {
    const std::size_t begin = pos + 1;
    pos = data.find('\n', begin);
    const std::string_view line(data.data() + begin,
                                (pos == std::string::npos ? data.size() : pos) - begin);
    // str.split(): runs of whitespace; a merge line holds exactly two symbols.
    std::vector<std::string> parts;
    std::size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
      std::size_t j = i;
      while (j < line.size() && !(line[j] == ' ' || line[j] == '\t' || line[j] == '\r')) ++j;
      if (j > i) parts.emplace_back(line.substr(i, j - i));
      i = j;
    }
    if (parts.size() != 2)
      throw core::InputError("CLIP BPE vocabulary " + vocab_path + ", line " +
                             std::to_string(line_no + 1) + ": expected a merge 'A B', got '" +
                             std::string(line) + "'");
    merges.emplace_back(parts[0], parts[1]);
    vocab.push_back(parts[0] + parts[1]);
    ++line_no;
  }
  if (merges.size() != detail::kMergeCount)
    throw core::InputError("CLIP BPE vocabulary " + vocab_path + ": expected " +
                           std::to_string(detail::kMergeCount) +
                           " merges after the header, found " + std::to_string(merges.size()));
  vocab.push_back("<start_of_text>");
  vocab.push_back("<end_of_text>");
  return v;
}

}  // namespace clipper::tokenizer

namespace clipper::tokenizer::detail {

ClipBpe::ClipBpe(const std::string& vocab_path) {
  const auto v = read_clip_vocabulary(vocab_path);
  const auto& vocab = v.tokens;
  const auto& merges = v.merges;
  std::array<int, 256> order{};
  const auto chars = byte_chars(order);

  std::unordered_map<std::string, std::int32_t> encoder;
  encoder.reserve(vocab.size());
  for (std::size_t i = 0; i < vocab.size(); ++i) encoder[vocab[i]] = static_cast<std::int32_t>(i);
  vocab_size_ = vocab.size();
  start_id_ = encoder.at("<start_of_text>");
  end_id_ = encoder.at("<end_of_text>");
  for (int b = 0; b < 256; ++b) {
    std::string s;
    append_utf8(s, chars[b]);
    byte_id_[b] = encoder.at(s);
    if (encoder.at(s + "</w>") != byte_id_[b] + 256)
      throw core::Error("CLIP BPE vocabulary " + vocab_path + ": unexpected byte layout");
  }
  merges_.reserve(merges.size());
  for (std::size_t r = 0; r < merges.size(); ++r) {
    const auto a = encoder.find(merges[r].first), b = encoder.find(merges[r].second);
    if (a == encoder.end() || b == encoder.end()) continue;  // can never apply
    merges_[pair_key(a->second, b->second)] = {static_cast<std::uint32_t>(r),
                                               encoder.at(merges[r].first + merges[r].second)};
  }
}

void ClipBpe::bpe(std::string_view piece, std::vector<std::int32_t>& word) const {
  word.clear();
  for (unsigned char b : piece) word.push_back(byte_id_[b]);
  if (word.empty()) return;
  word.back() += 256;  // the last symbol carries </w>
  if (word.size() > kLongPiece) return bpe_long(word);
  std::vector<std::int32_t> next;
  while (word.size() > 1) {
    std::uint32_t best_rank = std::numeric_limits<std::uint32_t>::max();
    std::int32_t first = 0, second = 0, merged = 0;
    for (std::size_t i = 0; i + 1 < word.size(); ++i) {
      auto it = merges_.find(pair_key(word[i], word[i + 1]));
      if (it != merges_.end() && it->second.rank < best_rank) {
        best_rank = it->second.rank;
        first = word[i], second = word[i + 1], merged = it->second.merged;
      }
    }
    if (best_rank == std::numeric_limits<std::uint32_t>::max()) break;
    next.clear();
    for (std::size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
        next.push_back(merged);
        i += 2;
      } else {
        next.push_back(word[i++]);
      }
    }
    word.swap(next);
  }
}

const ClipBpe::Merge* ClipBpe::find_merge(std::int32_t a, std::int32_t b) const {
  const auto it = merges_.find(pair_key(a, b));
  return it == merges_.end() ? nullptr : &it->second;
}

// open_clip's loop applies the lowest-ranked merge at every place it occurs, left to right, then
// looks for the next lowest rank. Here the candidate pairs wait in a heap ordered by (rank,
// position); all entries of one rank are taken together and applied left to right, and the pairs
// the merges create enter the heap only after that pass, as in open_clip. Stale entries (a
// symbol that was merged away or changed) are skipped.
void ClipBpe::bpe_long(std::vector<std::int32_t>& word) const {
  const auto n = static_cast<std::int32_t>(word.size());
  std::vector<std::int32_t> prev(word.size()), next(word.size());
  std::vector<char> alive(word.size(), 1);
  for (std::int32_t i = 0; i < n; ++i) prev[i] = i - 1, next[i] = i + 1 < n ? i + 1 : -1;
  struct Entry {
    std::uint32_t rank;
    std::int32_t pos, first, second;
    bool operator>(const Entry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  auto push = [&](std::int32_t left) {
    if (left < 0 || next[left] < 0) return;
    if (const Merge* m = find_merge(word[left], word[next[left]]))
      heap.push({m->rank, left, word[left], word[next[left]]});
  };
  for (std::int32_t i = 0; i + 1 < n; ++i) push(i);
  std::vector<Entry> pass;
  std::vector<std::int32_t> merged_at;
  while (!heap.empty()) {
    const std::uint32_t rank = heap.top().rank;
    pass.clear();
    while (!heap.empty() && heap.top().rank == rank) {
      pass.push_back(heap.top());
      heap.pop();
    }
    merged_at.clear();
    for (const Entry& e : pass) {  // by position, left to right
      const std::int32_t l = e.pos;
      if (!alive[l] || word[l] != e.first) continue;
      const std::int32_t r = next[l];
      if (r < 0 || word[r] != e.second) continue;
      word[l] = find_merge(e.first, e.second)->merged;
      alive[r] = 0;
      next[l] = next[r];
      if (next[r] >= 0) prev[next[r]] = l;
      merged_at.push_back(l);
    }
    for (std::int32_t l : merged_at) {
      push(prev[l]);
      push(l);
    }
  }
  std::size_t out = 0;
  for (std::int32_t i = 0; i >= 0; i = next[i]) word[out++] = word[i];
  word.resize(out);
}

void ClipBpe::encode_piece(std::string_view piece, std::vector<std::int64_t>& out) const {
  if (piece == "<start_of_text>") return out.push_back(start_id_);
  if (piece == "<end_of_text>") return out.push_back(end_id_);
  Shard& shard = cache_[std::hash<std::string_view>{}(piece) % kShards];
  {
    std::lock_guard<std::mutex> lock(shard.mutex);
    if (auto it = shard.map.find(std::string(piece)); it != shard.map.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<std::int32_t> ids;
  bpe(piece, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (piece.size() > kMaxCachedPiece) return;  // rare, and would crowd the cache
  std::lock_guard<std::mutex> lock(shard.mutex);
  if (shard.map.size() >= kShardCapacity) shard.map.clear();
  shard.map.emplace(std::string(piece), std::move(ids));
}

}  // namespace clipper::tokenizer::detail
