#pragma once
// OpenCLIP's SimpleTokenizer.decode: the ids' strings joined, the byte characters of its
// byte-level BPE mapped back to bytes (bytes_to_unicode inverted), "</w>" read as a space; start
// and end of text decode to their own names. Used by `clipper caption`.
#include <cstdint>
#include <string>
#include <vector>

#include "clipper/tokenizer/clip_vocab.hpp"

namespace clipper::tokenizer {

class ClipDecoder {
 public:
  explicit ClipDecoder(ClipVocabulary vocab);
  // An id outside the vocabulary is an InputError naming it.
  std::string decode(const std::vector<std::int64_t>& ids) const;
  // A generated caption: the ids after the start of text up to the first end of text (or pad 0),
  // decoded, spaces at the ends trimmed (open_clip's README recipe for generate's output).
  std::string caption(const std::vector<std::int64_t>& ids) const;

 private:
  ClipVocabulary vocab_;
};

}  // namespace clipper::tokenizer
