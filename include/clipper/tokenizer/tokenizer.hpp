#pragma once
// The tokenizer interface shared by the data loader, evaluation and `clipper embed`.
// Implementations: OpenCLIP's byte-level BPE ("clip") and SentencePiece ("sentencepiece:PATH").
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace clipper::tokenizer {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Writes exactly context_length() ids for `text` into `out`: start id, tokens, end id, then 0s;
  // a too-long text is cut to context_length() ids with the last one set to the end id
  // (open_clip.tokenize's rule). Thread-safe.
  virtual void encode(std::string_view text, std::int64_t* out) const = 0;
  virtual std::int64_t context_length() const = 0;
  virtual std::int64_t vocab_size() const = 0;
};

// `spec`: "clip" (OpenCLIP's SimpleTokenizer with the vocabulary found by default) or
// "sentencepiece:PATH" (a trained SentencePiece model). Throws InputError naming what is wrong.
std::shared_ptr<const Tokenizer> make_tokenizer(const std::string& spec,
                                                std::int64_t context_length);

}  // namespace clipper::tokenizer
