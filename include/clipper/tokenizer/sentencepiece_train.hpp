#pragma once
// Training a SentencePiece model from a caption file (`clipper tokenizer train`).
#include <cstdint>
#include <string>
#include <string_view>

namespace clipper::tokenizer {

struct SentencePieceTrainOptions {
  std::string input;                   // UTF-8 text, one caption per line
  std::int64_t vocab_size = 32000;     // pieces in the model, the four special ones included
  std::string out_prefix;              // writes PREFIX.model and PREFIX.vocab
  std::string model_type = "unigram";  // unigram | bpe
  double character_coverage = 0.9995;
  std::int64_t max_sentences = 0;  // 0: every line (SentencePiece's input_sentence_size)
};

// Trains with clipper's id layout: pad 0, unk 1, start (<s>) 2, end (</s>) 3. Each line is
// cleaned as the "sentencepiece:" tokenizer cleans text before encoding (clean_caption: ftfy's
// subset, HTML unescape, whitespace collapse; no lowercasing). Returns the .model path.
// Throws InputError naming the file or option at fault.
std::string train_sentencepiece(const SentencePieceTrainOptions& options);

// The cleaning applied to text before SentencePiece (open_clip's clean="whitespace").
std::string clean_caption(std::string_view text);

}  // namespace clipper::tokenizer
