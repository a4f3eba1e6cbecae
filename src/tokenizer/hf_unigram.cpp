// transformers 5's T5Tokenizer pipeline on tokenizers (normalizer Precompiled, pre-tokenizers
// WhitespaceSplit then Metaspace with prepend_scheme "always", model Unigram with fuse_unk) for
// the "hf:" tokenizer.
#include "hf_unigram.hpp"

#include <algorithm>
#include <limits>

#include "sp_proto.hpp"
#include "utf8.hpp"

namespace clipper::tokenizer::detail {
namespace {

constexpr std::string_view kMetaspace = "\xE2\x96\x81";  // U+2581, SentencePiece's space
constexpr double kUnkPenalty = 10.0;                     // tokenizers' K_UNK_PENALTY

// Bytes of the character at text[i] if Rust's char::is_whitespace holds for it, else 0.
std::size_t whitespace_at(std::string_view t, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(t[i + k]); };
  const std::size_t left = t.size() - i;
  if ((b(0) >= 0x09 && b(0) <= 0x0D) || b(0) == 0x20) return 1;
  if (left >= 2 && b(0) == 0xC2 && (b(1) == 0x85 || b(1) == 0xA0)) return 2;
  if (left < 3) return 0;
  if (b(0) == 0xE1 && b(1) == 0x9A && b(2) == 0x80) return 3;  // U+1680
  if (b(0) == 0xE2 && b(1) == 0x80 &&
      (b(2) <= 0x8A || b(2) == 0xA8 || b(2) == 0xA9 || b(2) == 0xAF))  // U+2000-200A, 2028/9, 202F
    return 3;
  if (b(0) == 0xE2 && b(1) == 0x81 && b(2) == 0x9F) return 3;  // U+205F
  if (b(0) == 0xE3 && b(1) == 0x80 && b(2) == 0x80) return 3;  // U+3000
  return 0;
}

std::vector<std::string_view> split_whitespace(std::string_view t) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (std::size_t i = 0; i < t.size();) {
    const std::size_t w = whitespace_at(t, i);
    if (w == 0) {
      i += utf8_length(static_cast<unsigned char>(t[i]));
      continue;
    }
    if (i > start) out.push_back(t.substr(start, i - start));
    i += w;
    start = i;
  }
  if (start < t.size()) out.push_back(t.substr(start));
  return out;
}

}  // namespace

HfUnigram::HfUnigram(const sentencepiece::SentencePieceProcessor& sp, const std::string& model_path)
    : precompiled_(precompiled_charsmap(sp.serialized_model_proto()), model_path) {
  double min_score = std::numeric_limits<double>::infinity();
  for (int id = 0; id < sp.GetPieceSize(); ++id) {
    const double score = sp.GetScore(id);  // float in the model; tokenizer.json holds it exactly
    pieces_.emplace(sp.IdToPiece(id), Piece{id, score});
    longest_piece_ = std::max(longest_piece_, sp.IdToPiece(id).size());
    min_score = std::min(min_score, score);
  }
  unk_id_ = sp.unk_id();
  unk_score_ = min_score - kUnkPenalty;
}

// tokenizers' Unigram::encode_optimized: the best path ending at each byte, extended from each
// character start in order, ties kept by the first (so the leftmost split wins), unknown
// characters at the unknown score and consecutive ones fused into one unknown id.
void HfUnigram::encode_word(std::string_view word, std::vector<std::int64_t>& ids) const {
  struct Best {
    double score = 0;
    std::size_t start = 0;
    std::int64_t id = -1;  // -1: no path ends here yet
  };
  std::vector<Best> best(word.size() + 1);
  const auto offer = [&](std::size_t end, std::size_t start, std::int64_t id, double score) {
    Best& b = best[end];
    if (b.id < 0 || score > b.score) b = Best{score, start, id};
  };
  for (std::size_t start = 0; start < word.size();) {
    const std::size_t char_len =
        std::min(utf8_length(static_cast<unsigned char>(word[start])), word.size() - start);
    const double before = best[start].score;
    bool single_char_piece = false;
    for (std::size_t len = 1; len <= longest_piece_ && start + len <= word.size(); ++len) {
      const auto it = pieces_.find(std::string(word.substr(start, len)));
      if (it == pieces_.end()) continue;
      offer(start + len, start, it->second.id, before + it->second.score);
      single_char_piece |= len == char_len;
    }
    if (!single_char_piece) offer(start + char_len, start, unk_id_, before + unk_score_);
    start += char_len;
  }
  std::vector<std::int64_t> reversed;
  for (std::size_t end = word.size(); end > 0; end = best[end].start) {
    const std::int64_t id = best[end].id;
    if (!(id == unk_id_ && !reversed.empty() && reversed.back() == unk_id_))  // fuse_unk
      reversed.push_back(id);
  }
  ids.insert(ids.end(), reversed.rbegin(), reversed.rend());
}

// Each whitespace-separated word gets a leading U+2581 and is cut before every U+2581 in it
// (Metaspace's split, MergedWithNext); each part is a Unigram word.
void HfUnigram::encode(std::string_view stretch, std::vector<std::int64_t>& ids) const {
  const std::string normalized = precompiled_.normalize(stretch);
  for (const std::string_view w : split_whitespace(normalized)) {
    std::string word(kMetaspace);
    word += w;
    std::size_t start = w.rfind(kMetaspace, 0) == 0 ? kMetaspace.size() : 0;
    for (std::size_t at = word.find(kMetaspace, start + 1); at != std::string::npos;
         at = word.find(kMetaspace, at + 1)) {
      encode_word(std::string_view(word).substr(start, at - start), ids);
      start = at;
    }
    encode_word(std::string_view(word).substr(start), ids);
  }
}

}  // namespace clipper::tokenizer::detail
