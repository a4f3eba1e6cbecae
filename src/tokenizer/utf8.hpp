#pragma once
// UTF-8 <-> UTF-32 for the tokenizers (private to src/tokenizer).
#include <cstddef>
#include <string>
#include <string_view>

namespace clipper::tokenizer::detail {

// Decodes UTF-8; each maximal ill-formed subsequence becomes U+FFFD (the rule of Python's
// bytes.decode("utf-8", errors="replace")).
std::u32string utf8_to_u32(std::string_view text);

// Bytes of the UTF-8 sequence a lead byte starts (1 for a byte that cannot lead one, so a walk
// over ill-formed text still moves on).
inline std::size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  return (lead >> 3) == 0x1E ? 4 : 1;
}

// Appends the UTF-8 form of `c` to `out`.
inline void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

inline std::string u32_to_utf8(std::u32string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) append_utf8(out, c);
  return out;
}

}  // namespace clipper::tokenizer::detail
