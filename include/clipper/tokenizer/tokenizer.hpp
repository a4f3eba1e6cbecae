#pragma once
// The tokenizer interface shared by the data loader, evaluation and `clipper embed`.
// Implementations: OpenCLIP's byte-level BPE ("clip"), SentencePiece ("sentencepiece:PATH") and
// a Hugging Face tokenizer folder of SigLIP / SigLIP 2 ("hf:NAME_OR_PATH", open_clip's
// HFTokenizer).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "clipper/core/error.hpp"

namespace clipper::tokenizer {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Writes exactly context_length() ids for `text` into `out`. "clip" and "sentencepiece:":
  // start id, tokens, end id, then 0s; a too-long text is cut to context_length() ids with the
  // last one set to the end id (open_clip.tokenize's rule). "hf:": the ids of open_clip's
  // HFTokenizer (the folder's special tokens, truncation and padding). Thread-safe.
  virtual void encode(std::string_view text, std::int64_t* out) const = 0;
  virtual std::int64_t context_length() const = 0;
  virtual std::int64_t vocab_size() const = 0;

  // Caption generation (`clipper caption`): the ids a generated row starts with, ends at and is
  // padded with, and the text of a generated row (the ids after the start up to the first end or
  // pad id, decoded, ends trimmed). "clip" and "sentencepiece:" decode; "hf:" throws InputError.
  struct RowIds {
    std::int64_t start = -1, end = -1, pad = 0;
  };
  virtual RowIds row_ids() const { throw core::InputError(kCannotDecode); }
  virtual std::string caption(const std::vector<std::int64_t>&) const {
    throw core::InputError(kCannotDecode);
  }

 private:
  static constexpr const char* kCannotDecode =
      "captions decode with the 'clip' and 'sentencepiece:' tokenizers only";
};

// open_clip's HFTokenizer(clean=...): the text cleaning before an "hf:" tokenizer. All three
// first apply ftfy's fixes and html.unescape twice; whitespace: whitespace runs become one
// space, ends stripped; lower: the same, then lowercased; canonicalize (SigLIP's configs): '_'
// becomes a space, ASCII punctuation is removed, lowercased, whitespace collapsed.
enum class TextClean { whitespace, canonicalize, lower };

inline const char* name_of(TextClean c) {
  switch (c) {
    case TextClean::canonicalize:
      return "canonicalize";
    case TextClean::lower:
      return "lower";
    default:
      return "whitespace";
  }
}
inline std::optional<TextClean> parse_text_clean(const std::string& s) {
  for (auto c : {TextClean::whitespace, TextClean::canonicalize, TextClean::lower})
    if (s == name_of(c)) return c;
  return std::nullopt;
}

// `spec`: "clip" (OpenCLIP's SimpleTokenizer with the vocabulary found by default),
// "sentencepiece:PATH" (a trained SentencePiece model) or "hf:NAME_OR_PATH" (a Hugging Face
// tokenizer folder, found as find_hf_tokenizer_dir says; `clean` applies to it only, its default
// is HFTokenizer's). Throws InputError naming what is wrong.
std::shared_ptr<const Tokenizer> make_tokenizer(const std::string& spec,
                                                std::int64_t context_length,
                                                TextClean clean = TextClean::whitespace);
// The same with the cleaning as a model file spells it (text_cfg.tokenizer_clean): the factory
// the session builds a model's tokenizer with. An unknown word is an InputError naming it.
std::shared_ptr<const Tokenizer> make_model_tokenizer(const std::string& spec,
                                                      std::int64_t context_length,
                                                      const std::string& clean);

}  // namespace clipper::tokenizer
