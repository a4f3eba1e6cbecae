#include "clip_pretokenize.hpp"

#include <unicode/uchar.h>

#include <array>

namespace clipper::tokenizer::detail {
namespace {

enum class Kind : unsigned char { letter, number, other, space, none };

// The `regex` module's `\s` (a subset of Python's isspace: the text is whitespace-cleaned first).
bool is_regex_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

Kind classify_slow(char32_t c) {
  if (is_regex_space(c)) return Kind::space;
  // U+0345 (combining ypogegrammeni) case-folds to a letter: with re.IGNORECASE it is neither in
  // [\p{L}] nor in [^\s\p{L}\p{N}], so no alternative matches it and it is skipped.
  if (c == 0x0345) return Kind::none;
  const auto mask = U_GET_GC_MASK(static_cast<UChar32>(c));
  if (mask & U_GC_L_MASK) return Kind::letter;
  if (mask & U_GC_N_MASK) return Kind::number;
  return Kind::other;
}

const std::array<Kind, 128>& ascii_kinds() {
  static const std::array<Kind, 128> t = [] {
    std::array<Kind, 128> t{};
    for (char32_t c = 0; c < 128; ++c) t[c] = classify_slow(c);
    return t;
  }();
  return t;
}

inline Kind classify(char32_t c) {
  return c < 128 ? ascii_kinds()[c] : classify_slow(c);
}

// 's' also matches U+017F (long s) under the regex module's simple case folding.
inline bool is_s(char32_t c) {
  return c == U's' || c == 0x017F;
}

bool match_literal(const std::u32string& t, std::size_t i, std::u32string_view lit) {
  if (t.size() - i < lit.size()) return false;
  for (std::size_t k = 0; k < lit.size(); ++k) {
    const char32_t want = lit[k], got = t[i + k];
    if (want == U's' ? !is_s(got) : got != want) return false;
  }
  return true;
}

// Length of a contraction at t[i] == '\'' (0 when none).
std::size_t contraction(const std::u32string& t, std::size_t i) {
  if (i + 1 >= t.size()) return 0;
  const char32_t a = t[i + 1];
  if (is_s(a) || a == U't' || a == U'm' || a == U'd') return 2;
  if (i + 2 < t.size()) {
    const char32_t b = t[i + 2];
    if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l')) return 3;
  }
  return 0;
}

}  // namespace

void clip_pretokenize(const std::u32string& t, std::vector<Span>& out, std::size_t max_pieces) {
  const std::size_t n = t.size();
  std::size_t i = 0;
  std::size_t count = 0;
  auto emit = [&](std::size_t b, std::size_t e) {
    out.push_back({b, e});
    ++count;
  };
  while (i < n && count < max_pieces) {
    const char32_t c = t[i];
    if (c == U'<') {
      if (match_literal(t, i, U"<start_of_text>")) {
        emit(i, i + 15);
        i += 15;
        continue;
      }
      if (match_literal(t, i, U"<end_of_text>")) {
        emit(i, i + 13);
        i += 13;
        continue;
      }
    } else if (c == U'\'') {
      if (const std::size_t len = contraction(t, i)) {
        emit(i, i + len);
        i += len;
        continue;
      }
    }
    switch (classify(c)) {
      case Kind::letter: {
        std::size_t e = i + 1;
        while (e < n && classify(t[e]) == Kind::letter) ++e;
        emit(i, e);
        i = e;
        break;
      }
      case Kind::number:
        emit(i, i + 1);
        ++i;
        break;
      case Kind::other: {
        std::size_t e = i + 1;
        while (e < n && classify(t[e]) == Kind::other) ++e;
        emit(i, e);
        i = e;
        break;
      }
      default:
        ++i;
    }
  }
}

}  // namespace clipper::tokenizer::detail
