#pragma once
// OpenCLIP's default caption cleaning (SimpleTokenizer, clean="lower"), as clipper implements it:
// the parts of ftfy.fix_text that matter for captions, html.unescape twice, whitespace collapsed
// to single spaces, and full Unicode lowercase. docs/tokenizer.md lists where it differs from
// ftfy. UTF-8 in (ill-formed bytes become U+FFFD), UTF-8 out.
#include <string>
#include <string_view>

namespace clipper::tokenizer {

std::string clip_clean(std::string_view text);

}  // namespace clipper::tokenizer
