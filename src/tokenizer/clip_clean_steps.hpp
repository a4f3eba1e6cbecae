#pragma once
// The cleaning steps of the CLIP tokenizer on UTF-32 text, one by one (private to src/tokenizer;
// the public UTF-8 entry point is clipper/tokenizer/clip_clean.hpp).
#include <string>

namespace clipper::tokenizer::detail {

// ftfy.fix_text's subset (see clip_clean.cpp), then html.unescape twice, whitespace collapse,
// lower.
std::u32string clip_clean(std::u32string text);

// The steps one by one, for tests and for clip_clean.
std::u32string ftfy_fix_text(const std::u32string& text);
std::u32string html_unescape(const std::u32string& text);  // Python's html.unescape
std::u32string whitespace_clean(const std::u32string& text);
std::u32string unicode_lower(const std::u32string& text);  // Python's str.lower (via ICU)
bool is_python_space(char32_t c);                          // Python's str.isspace

}  // namespace clipper::tokenizer::detail
