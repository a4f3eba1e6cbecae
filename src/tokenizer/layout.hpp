#pragma once
// Private to src/tokenizer: how the tokenizers build one row of ids, and their factories.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "clipper/tokenizer/tokenizer.hpp"

namespace clipper::tokenizer::detail {

// open_clip.tokenize's row: [start] + tokens + [end], cut to `length` with the last id set to
// `end`, then `pad` up to `length`. `start` < 0: no start id.
inline void write_row(std::int64_t start, const std::vector<std::int64_t>& tokens, std::int64_t end,
                      std::int64_t pad, std::int64_t length, std::int64_t* out) {
  std::int64_t n = 0;
  if (start >= 0 && n < length) out[n++] = start;
  for (std::size_t i = 0; i < tokens.size() && n < length; ++i) out[n++] = tokens[i];
  if (n < length) {
    out[n++] = end;
  } else if (n > 0) {
    out[n - 1] = end;  // too long: the last id becomes the end id
  }
  std::fill(out + n, out + length, pad);
}

std::shared_ptr<const Tokenizer> make_clip_tokenizer(const std::string& vocab_path,
                                                     std::int64_t context_length);
std::shared_ptr<const Tokenizer> make_sentencepiece_tokenizer(const std::string& model_path,
                                                              std::int64_t context_length);
// `dir`: an existing Hugging Face tokenizer folder (make_tokenizer resolves hf:NAME first).
std::shared_ptr<const Tokenizer> make_hf_tokenizer(const std::string& dir,
                                                   std::int64_t context_length, TextClean clean);

}  // namespace clipper::tokenizer::detail
