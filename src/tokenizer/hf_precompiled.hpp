#pragma once
// Private to src/tokenizer: the `Precompiled` normalizer of Hugging Face `tokenizers`, which a
// SigLIP (T5) tokenizer.json runs first. It reads the same character map as SentencePiece's
// nmt_nfkc normalizer but applies it per grapheme cluster, with the first (shortest) matching
// rule, where libsentencepiece takes the longest match over the bytes; the two part on graphemes
// such as U+1E9B U+0323, so open_clip's ids need tokenizers' rule.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace clipper::tokenizer::detail {

class PrecompiledNormalizer {
 public:
  // `charsmap`: NormalizerSpec.precompiled_charsmap (a darts-clone double array, then the
  // replacement strings). "" normalizes nothing. Throws InputError (naming `where`) on a map that
  // does not parse.
  PrecompiledNormalizer(const std::string& charsmap, const std::string& where);

  std::string normalize(std::string_view text) const;

 private:
  // The replacement of the shortest rule key that is a prefix of `key`; nullptr when none.
  const char* shortest_rule(std::string_view key) const;
  void append_normalized(std::string_view grapheme, std::string& out) const;

  std::vector<std::uint32_t> units_;
  std::string replacements_;  // NUL-terminated strings, indexed by the units' values
};

}  // namespace clipper::tokenizer::detail
