// open_clip's HFTokenizer cleaning (tokenizer.py: basic_clean, whitespace_clean,
// canonicalize_text) on clipper's ftfy / html.unescape / lowercase steps.
#include "clipper/tokenizer/text_clean.hpp"

#include "clip_clean_steps.hpp"
#include "utf8.hpp"

namespace clipper::tokenizer {
namespace {

// canonicalize_text: '_' to ' ', string.punctuation removed (ASCII only), lower, whitespace.
std::u32string canonicalize(const std::u32string& s) {
  static const std::u32string punctuation = U"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
  std::u32string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (c == U'_') {
      out.push_back(U' ');
    } else if (punctuation.find(c) == std::u32string::npos) {
      out.push_back(c);
    }
  }
  return detail::whitespace_clean(detail::unicode_lower(out));
}

}  // namespace

std::string clean_text(std::string_view text, TextClean clean) {
  using namespace detail;
  // basic_clean: ftfy.fix_text, html.unescape twice (its strip is part of whitespace_clean).
  const std::u32string basic = html_unescape(html_unescape(ftfy_fix_text(utf8_to_u32(text))));
  switch (clean) {
    case TextClean::canonicalize:
      return u32_to_utf8(canonicalize(basic));
    case TextClean::lower:
      return u32_to_utf8(unicode_lower(whitespace_clean(basic)));
    default:
      return u32_to_utf8(whitespace_clean(basic));
  }
}

}  // namespace clipper::tokenizer
