// OpenCLIP's caption cleaning, step by step as open_clip's SimpleTokenizer (clean="lower") does
// it: ftfy.fix_text, html.unescape twice, strip, whitespace collapse, lower. The behaviour was
// read from ftfy 6.3.1 and CPython 3.11 and written anew; docs/tokenizer.md lists the ftfy steps
// that are not ported (mojibake repair) with examples.
#include "clip_clean_steps.hpp"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <array>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "clipper/core/error.hpp"
#include "clipper/tokenizer/clip_clean.hpp"
#include "utf8.hpp"

namespace clipper::tokenizer {
namespace detail {
namespace {

struct HtmlEntity {
  const char* name;
  const char32_t* value;
};
#include "html_entities.inc"

using EntityMap = std::unordered_map<std::string_view, std::u32string_view>;

template <std::size_t N>
EntityMap make_entity_map(const HtmlEntity (&table)[N]) {
  EntityMap m;
  m.reserve(N);
  for (const auto& e : table) m.emplace(e.name, e.value);
  return m;
}

const EntityMap& html5_entities() {
  static const EntityMap m = make_entity_map(kHtml5Entities);
  return m;
}

const EntityMap& upper_case_entities() {
  static const EntityMap m = make_entity_map(kUpperCaseEntities);
  return m;
}

// Windows-1252 for bytes 0x80-0x9F; its five holes map to the C1 control of the same value (the
// "sloppy" codec of ftfy and the HTML5 table of invalid numeric references).
constexpr std::array<char32_t, 32> kCp1252C1 = {
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178};

bool is_ascii_digit(char32_t c) {
  return c >= '0' && c <= '9';
}
bool is_ascii_alpha(char32_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_ascii_alnum(char32_t c) {
  return is_ascii_digit(c) || is_ascii_alpha(c);
}
int hex_value(char32_t c) {
  if (is_ascii_digit(c)) return static_cast<int>(c - '0');
  if (c >= 'a' && c <= 'f') return static_cast<int>(c - 'a' + 10);
  if (c >= 'A' && c <= 'F') return static_cast<int>(c - 'A' + 10);
  return -1;
}

// What html.unescape puts for the numeric reference &#`value`; (value saturated at 0x110000).
void append_numeric_reference(std::u32string& out, std::uint32_t value) {
  if (value == 0x00) return out.push_back(0xFFFD);
  if (value == 0x0D) return out.push_back(U'\r');
  if (value >= 0x80 && value <= 0x9F) return out.push_back(kCp1252C1[value - 0x80]);
  if ((value >= 0xD800 && value <= 0xDFFF) || value > 0x10FFFF) return out.push_back(0xFFFD);
  const bool invalid = (value >= 0x01 && value <= 0x08) || value == 0x0B ||
                       (value >= 0x0E && value <= 0x1F) || value == 0x7F ||
                       (value >= 0xFDD0 && value <= 0xFDEF) || (value & 0xFFFE) == 0xFFFE;
  if (!invalid) out.push_back(static_cast<char32_t>(value));
}

// Python's html.unescape at s[i] == '&': the reference `&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|
// [^\t\n\f <&#;]{1,32};?)` is decoded into `out` and the index after it returned; 0 when the
// pattern does not match there.
std::size_t unescape_reference(const std::u32string& s, std::size_t i, std::u32string& out) {
  const std::size_t n = s.size();
  std::size_t j = i + 1;
  if (j < n && s[j] == U'#') {
    std::size_t k = j + 1;
    int base = 10;
    if (k < n && (s[k] == U'x' || s[k] == U'X') && k + 1 < n && hex_value(s[k + 1]) >= 0) {
      base = 16;
      ++k;
    } else if (k >= n || !is_ascii_digit(s[k])) {
      return 0;  // a name cannot start with '#'
    }
    std::uint32_t value = 0;
    std::size_t m = k;
    for (; m < n; ++m) {
      const int d = base == 16 ? hex_value(s[m]) : (is_ascii_digit(s[m]) ? int(s[m] - '0') : -1);
      if (d < 0) break;
      value = value > 0x110000 ? 0x110000 + 1 : value * base + d;
    }
    if (m < n && s[m] == U';') ++m;
    append_numeric_reference(out, value);
    return m;
  }
  std::size_t m = j;
  while (m < n && m - j < 32) {
    const char32_t c = s[m];
    if (c == U'\t' || c == U'\n' || c == U'\f' || c == U' ' || c == U'<' || c == U'&' ||
        c == U'#' || c == U';')
      break;
    ++m;
  }
  if (m == j) return 0;
  if (m < n && s[m] == U';') ++m;
  const std::u32string_view name(s.data() + j, m - j);
  const auto& table = html5_entities();
  if (auto it = table.find(u32_to_utf8(name)); it != table.end()) {
    out.append(it->second);
    return m;
  }
  // The longest prefix that is a reference (those without ';' are the legacy ones).
  for (std::size_t x = name.size() - 1; x >= 2 && x < name.size(); --x) {
    if (auto it = table.find(u32_to_utf8(name.substr(0, x))); it != table.end()) {
      out.append(it->second);
      out.append(name.substr(x));
      return m;
    }
  }
  out.push_back(U'&');
  out.append(name);
  return m;
}

// ftfy's unescape_html: `&#?[0-9A-Za-z]{1,24};` that is an HTML5 reference ending in ';', one of
// the all-caps spellings, or a numeric reference that html.unescape decodes completely.
std::u32string ftfy_unescape_html(const std::u32string& s) {
  if (s.find(U'&') == std::u32string::npos) return s;
  std::u32string out;
  out.reserve(s.size());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    if (s[i] != U'&') {
      out.push_back(s[i++]);
      continue;
    }
    const bool hash = i + 1 < n && s[i + 1] == U'#';
    const std::size_t k = i + 1 + (hash ? 1 : 0);
    std::size_t m = k;
    while (m < n && m - k <= 24 && is_ascii_alnum(s[m])) ++m;
    if (m == k || m - k > 24 || m >= n || s[m] != U';') {
      out.push_back(s[i++]);
      continue;
    }
    const std::size_t end = m + 1;
    const std::u32string_view match(s.data() + i, end - i);
    bool replaced = false;
    if (!hash) {
      const std::string key = u32_to_utf8(match.substr(1));
      for (const EntityMap* table : {&html5_entities(), &upper_case_entities()}) {
        if (auto it = table->find(key); it != table->end()) {
          out.append(it->second);
          replaced = true;
          break;
        }
      }
    } else {
      const std::u32string decoded = html_unescape(std::u32string(match));
      if (decoded.find(U';') == std::u32string::npos) {
        out.append(decoded);
        replaced = true;
      }
    }
    if (!replaced) out.append(match);
    i = end;
  }
  return out;
}

const std::unordered_map<char32_t, std::u32string>& ligatures() {
  static const std::unordered_map<char32_t, std::u32string> m = {
      {0x0132, U"IJ"},      {0x0133, U"ij"}, {0x0149, U"\u02BCn"}, {0x01F1, U"DZ"},
      {0x01F2, U"Dz"},      {0x01F3, U"dz"}, {0x01C4, U"D\u017D"}, {0x01C5, U"D\u017E"},
      {0x01C6, U"d\u017E"}, {0x01C7, U"LJ"}, {0x01C8, U"Lj"},      {0x01C9, U"lj"},
      {0x01CA, U"NJ"},      {0x01CB, U"Nj"}, {0x01CC, U"nj"},      {0xFB00, U"ff"},
      {0xFB01, U"fi"},      {0xFB02, U"fl"}, {0xFB03, U"ffi"},     {0xFB04, U"ffl"},
      {0xFB05, U"\u017Ft"}, {0xFB06, U"st"}};
  return m;
}

const UNormalizer2* normalizer(bool nfkc) {
  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* n = nfkc ? unorm2_getNFKCInstance(&err) : unorm2_getNFCInstance(&err);
  if (U_FAILURE(err)) throw core::Error(std::string("ICU normalizer: ") + u_errorName(err));
  return n;
}

std::vector<UChar> to_utf16(const std::u32string& s) {
  std::vector<UChar> out(s.size() * 2 + 1);
  int32_t len = 0;
  UErrorCode err = U_ZERO_ERROR;
  u_strFromUTF32(out.data(), static_cast<int32_t>(out.size()), &len,
                 reinterpret_cast<const UChar32*>(s.data()), static_cast<int32_t>(s.size()), &err);
  if (U_FAILURE(err)) throw core::Error(std::string("ICU UTF-32 to UTF-16: ") + u_errorName(err));
  out.resize(len);
  return out;
}

std::u32string from_utf16(const UChar* s, int32_t len) {
  std::u32string out(static_cast<std::size_t>(len), U'\0');
  int32_t out_len = 0;
  UErrorCode err = U_ZERO_ERROR;
  u_strToUTF32(reinterpret_cast<UChar32*>(out.data()), static_cast<int32_t>(out.size()), &out_len,
               s, len, &err);
  if (U_FAILURE(err)) throw core::Error(std::string("ICU UTF-16 to UTF-32: ") + u_errorName(err));
  out.resize(out_len);
  return out;
}

// Runs an ICU UTF-16 transform that may grow the text (normalization, case mapping).
template <typename F>
std::u32string transform_utf16(const std::u32string& s, F&& f) {
  const std::vector<UChar> src = to_utf16(s);
  std::vector<UChar> dst(src.size() * 3 + 16);
  UErrorCode err = U_ZERO_ERROR;
  int32_t len = f(src.data(), static_cast<int32_t>(src.size()), dst.data(),
                  static_cast<int32_t>(dst.size()), &err);
  if (err == U_BUFFER_OVERFLOW_ERROR) {
    dst.resize(len);
    err = U_ZERO_ERROR;
    len = f(src.data(), static_cast<int32_t>(src.size()), dst.data(),
            static_cast<int32_t>(dst.size()), &err);
  }
  if (U_FAILURE(err)) throw core::Error(std::string("ICU: ") + u_errorName(err));
  return from_utf16(dst.data(), len);
}

std::u32string nfc(const std::u32string& s) {
  bool below = true;  // text below U+0300 has no combining marks and is NFC already
  for (char32_t c : s) below = below && c < 0x300;
  if (below) return s;
  static const UNormalizer2* n = normalizer(false);
  return transform_utf16(
      s, [](const UChar* src, int32_t len, UChar* dst, int32_t cap, UErrorCode* err) {
        return unorm2_normalize(n, src, len, dst, cap, err);
      });
}

// ftfy's width map: U+3000 to a space, and U+FF01-U+FFEF to their NFKC forms.
const std::unordered_map<char32_t, std::u32string>& width_map() {
  static const std::unordered_map<char32_t, std::u32string> m = [] {
    std::unordered_map<char32_t, std::u32string> m{{0x3000, U" "}};
    const UNormalizer2* n = normalizer(true);
    for (char32_t c = 0xFF01; c < 0xFFF0; ++c) {
      const std::u32string one(1, c);
      auto alt = transform_utf16(
          one, [n](const UChar* src, int32_t len, UChar* dst, int32_t cap, UErrorCode* err) {
            return unorm2_normalize(n, src, len, dst, cap, err);
          });
      if (alt != one) m.emplace(c, std::move(alt));
    }
    return m;
  }();
  return m;
}

bool is_removed_control(char32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F ||
         (c >= 0x206A && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

// One pass of ftfy's fixers after unescape_html and fix_encoding, in ftfy's order.
std::u32string apply_fixers(const std::u32string& in) {
  std::u32string a;
  a.reserve(in.size());
  // fix_c1_controls, fix_latin_ligatures, fix_character_width
  for (char32_t c : in) {
    if (c >= 0x80 && c <= 0x9F) c = kCp1252C1[c - 0x80];
    if (c >= 0x0132 && c <= 0xFB06) {
      const auto& lig = ligatures();
      if (auto it = lig.find(c); it != lig.end()) {
        a.append(it->second);
        continue;
      }
    }
    a.push_back(c);
  }
  std::u32string b;
  b.reserve(a.size());
  for (char32_t c : a) {
    if (c == 0x3000 || (c >= 0xFF01 && c < 0xFFF0)) {
      const auto& w = width_map();
      if (auto it = w.find(c); it != w.end()) {
        b.append(it->second);
        continue;
      }
    }
    b.push_back(c);
  }
  // uncurl_quotes, fix_line_breaks
  a.clear();
  for (std::size_t i = 0; i < b.size(); ++i) {
    char32_t c = b[i];
    if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) c = U'\'';
    if (c >= 0x201C && c <= 0x201F) c = U'"';
    if (c == U'\r') {
      if (i + 1 < b.size() && b[i + 1] == U'\n') ++i;
      c = U'\n';
    }
    if (c == 0x2028 || c == 0x2029 || c == 0x0085) c = U'\n';
    a.push_back(c);
  }
  // (fix_surrogates: UTF-32 from well-formed UTF-8 holds none.) remove_terminal_escapes
  b.clear();
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] == 0x1B && i + 1 < a.size() && a[i + 1] == U'[') {
      std::size_t m = i + 2;
      while (m < a.size() &&
             (a[m] == U';' || u_charType(static_cast<UChar32>(a[m])) == U_DECIMAL_DIGIT_NUMBER))
        ++m;
      if (m < a.size() && is_ascii_alpha(a[m])) {
        i = m;
        continue;
      }
    }
    b.push_back(a[i]);
  }
  // remove_control_chars
  a.clear();
  for (char32_t c : b)
    if (!is_removed_control(c)) a.push_back(c);
  return nfc(a);
}

// True when no fixer can change `s`: printable ASCII, tabs, newlines, and no '&' to unescape.
bool ftfy_noop(const std::u32string& s, bool unescape) {
  for (char32_t c : s) {
    if (c >= 0x7F || (c < 0x20 && c != U'\n' && c != U'\t' && c != U'\f')) return false;
    if (unescape && c == U'&') return false;
  }
  return true;
}

std::u32string fix_segment(std::u32string text, bool unescape) {
  if (ftfy_noop(text, unescape)) return text;
  while (true) {
    std::u32string fixed = unescape ? ftfy_unescape_html(text) : text;
    // fix_encoding (mojibake repair) is not ported: see docs/tokenizer.md.
    fixed = apply_fixers(fixed);
    if (fixed == text) return fixed;
    text = std::move(fixed);
  }
}

}  // namespace

bool is_python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

std::u32string ftfy_fix_text(const std::u32string& text) {
  constexpr std::size_t kMaxSegment = 1000000;  // ftfy's max_decode_length
  std::u32string out;
  out.reserve(text.size());
  bool unescape = true;  // "auto": off from the first segment holding '<' on
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t brk = text.find(U'\n', pos);
    std::size_t end = brk == std::u32string::npos ? text.size() : brk + 1;
    if (end - pos > kMaxSegment) end = pos + kMaxSegment;
    std::u32string segment = text.substr(pos, end - pos);
    if (unescape && segment.find(U'<') != std::u32string::npos) unescape = false;
    out += fix_segment(std::move(segment), unescape);
    pos = end;
  }
  return out;
}

std::u32string html_unescape(const std::u32string& s) {
  if (s.find(U'&') == std::u32string::npos) return s;
  std::u32string out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    if (s[i] == U'&') {
      if (const std::size_t end = unescape_reference(s, i, out)) {
        i = end;
        continue;
      }
    }
    out.push_back(s[i++]);
  }
  return out;
}

std::u32string whitespace_clean(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  bool pending_space = false;
  for (char32_t c : s) {
    if (is_python_space(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(U' ');
    pending_space = false;
    out.push_back(c);
  }
  return out;
}

std::u32string unicode_lower(const std::u32string& s) {
  bool ascii = true;
  for (char32_t c : s) ascii = ascii && c < 0x80;
  if (ascii) {
    std::u32string out = s;
    for (char32_t& c : out)
      if (c >= U'A' && c <= U'Z') c += 32;
    return out;
  }
  // Full lowercase mapping of the root locale (SpecialCasing's unconditional entries and
  // Final_Sigma), as Python's str.lower.
  return transform_utf16(
      s, [](const UChar* src, int32_t len, UChar* dst, int32_t cap, UErrorCode* err) {
        return u_strToLower(dst, cap, src, len, "", err);
      });
}

std::u32string clip_clean(std::u32string text) {
  text = ftfy_fix_text(text);
  text = html_unescape(html_unescape(text));
  text = whitespace_clean(text);  // also basic_clean's strip
  return unicode_lower(text);
}

}  // namespace detail

std::string clip_clean(std::string_view text) {
  return detail::u32_to_utf8(detail::clip_clean(detail::utf8_to_u32(text)));
}

}  // namespace clipper::tokenizer
