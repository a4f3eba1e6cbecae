#pragma once
// open_clip's HFTokenizer cleaning functions (tokenizer.py: _clean_whitespace, _clean_lower,
// _clean_canonicalize), UTF-8 in (ill-formed bytes become U+FFFD), UTF-8 out. ftfy.fix_text is
// clipper's subset of it, as for the CLIP tokenizer (docs/tokenizer.md).
#include <string>
#include <string_view>

#include "clipper/tokenizer/tokenizer.hpp"

namespace clipper::tokenizer {

std::string clean_text(std::string_view text, TextClean clean);

}  // namespace clipper::tokenizer
