#pragma once
// The CLIP pre-token pattern (private to src/tokenizer).
#include <cstddef>
#include <string>
#include <vector>

namespace clipper::tokenizer::detail {

struct Span {
  std::size_t begin = 0, end = 0;  // [begin, end) in code points
};

// Splits cleaned, lowercased text as open_clip's pattern does with re.IGNORECASE:
//   <start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
// Classes come from ICU. Appends the pieces to `out` and stops once `max_pieces` are there.
void clip_pretokenize(const std::u32string& text, std::vector<Span>& out,
                      std::size_t max_pieces = static_cast<std::size_t>(-1));

}  // namespace clipper::tokenizer::detail
