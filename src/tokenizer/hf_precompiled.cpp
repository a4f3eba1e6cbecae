// tokenizers' Precompiled normalizer (spm_precompiled): per extended grapheme cluster (ICU's
// character break iterator), a cluster under 6 bytes is replaced whole by the shortest rule that
// matches its start; otherwise each code point is looked up alone.
#include "hf_precompiled.hpp"

#include <unicode/ubrk.h>
#include <unicode/utext.h>

#include <cstring>
#include <memory>

#include "clipper/core/error.hpp"
#include "utf8.hpp"

namespace clipper::tokenizer::detail {
namespace {

// darts-clone's double-array unit.
bool has_leaf(std::uint32_t u) {
  return (u >> 8) & 1;
}
std::uint32_t value(std::uint32_t u) {
  return u & ((1u << 31) - 1);
}
std::uint32_t label(std::uint32_t u) {
  return u & ((1u << 31) | 0xFF);
}
std::uint32_t offset(std::uint32_t u) {
  return (u >> 10) << ((u & (1u << 9)) >> 6);
}

struct BreakIteratorCloser {
  void operator()(UBreakIterator* b) const { ubrk_close(b); }
};
struct UTextCloser {
  void operator()(UText* t) const { utext_close(t); }
};

}  // namespace

PrecompiledNormalizer::PrecompiledNormalizer(const std::string& charsmap,
                                             const std::string& where) {
  if (charsmap.empty()) return;
  std::uint32_t trie_bytes = 0;
  core::require(charsmap.size() >= 4, where + ": precompiled_charsmap is truncated");
  std::memcpy(&trie_bytes, charsmap.data(), 4);  // little-endian, as x86 and ARM read it
  core::require(trie_bytes % 4 == 0 && trie_bytes > 0 && trie_bytes <= charsmap.size() - 4,
                where + ": precompiled_charsmap's trie size " + std::to_string(trie_bytes) +
                    " does not fit its " + std::to_string(charsmap.size()) + " bytes");
  units_.resize(trie_bytes / 4);
  std::memcpy(units_.data(), charsmap.data() + 4, trie_bytes);
  replacements_ = charsmap.substr(4 + trie_bytes);
}

const char* PrecompiledNormalizer::shortest_rule(std::string_view key) const {
  if (units_.empty()) return nullptr;
  std::size_t node = offset(units_[0]);
  for (const char ch : key) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == 0) return nullptr;
    node ^= c;
    if (node >= units_.size()) return nullptr;
    const std::uint32_t unit = units_[node];
    if (label(unit) != c) return nullptr;
    node ^= offset(unit);
    if (node >= units_.size()) return nullptr;
    if (has_leaf(unit)) {
      const std::uint32_t at = value(units_[node]);
      return at < replacements_.size() ? replacements_.c_str() + at : nullptr;
    }
  }
  return nullptr;
}

void PrecompiledNormalizer::append_normalized(std::string_view grapheme, std::string& out) const {
  if (grapheme.size() < 6) {
    if (const char* r = shortest_rule(grapheme)) {
      out += r;
      return;
    }
  }
  for (std::size_t i = 0; i < grapheme.size();) {
    const std::size_t n =
        std::min(utf8_length(static_cast<unsigned char>(grapheme[i])), grapheme.size() - i);
    const std::string_view code_point = grapheme.substr(i, n);
    if (const char* r = shortest_rule(code_point))
      out += r;
    else
      out += code_point;
    i += n;
  }
}

std::string PrecompiledNormalizer::normalize(std::string_view text) const {
  if (units_.empty() || text.empty()) return std::string(text);
  UErrorCode status = U_ZERO_ERROR;
  std::unique_ptr<UText, UTextCloser> utext(
      utext_openUTF8(nullptr, text.data(), static_cast<std::int64_t>(text.size()), &status));
  std::unique_ptr<UBreakIterator, BreakIteratorCloser> breaks(
      ubrk_open(UBRK_CHARACTER, "", nullptr, 0, &status));
  if (U_SUCCESS(status)) ubrk_setUText(breaks.get(), utext.get(), &status);
  if (U_FAILURE(status))
    throw core::Error(std::string("ICU grapheme breaks: ") + u_errorName(status));
  std::string out;
  out.reserve(text.size());
  // With UTF-8 UText, the iterator's indexes are byte offsets into `text`.
  for (std::int32_t start = ubrk_first(breaks.get()), end = ubrk_next(breaks.get());
       end != UBRK_DONE; start = end, end = ubrk_next(breaks.get()))
    append_normalized(text.substr(start, end - start), out);
  return out;
}

}  // namespace clipper::tokenizer::detail
