#pragma once
// Private to src/tokenizer: a SigLIP (T5) folder's text encoding as transformers 5's T5Tokenizer
// builds it on Hugging Face `tokenizers` (whatever pipeline tokenizer.json names): the Precompiled
// normalizer, the WhitespaceSplit and Metaspace pre-tokenizers, then the Unigram model word by word
// with its best-path search in doubles.
// libsentencepiece computes the same segmentation in floats over the whole text, and so breaks
// ties between equally scored splits (long repetitions such as "abab...") another way; open_clip's
// HFTokenizer is the reference, so clipper follows tokenizers.
#include <sentencepiece_processor.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "hf_precompiled.hpp"

namespace clipper::tokenizer::detail {

class HfUnigram {
 public:
  // The pieces, scores and character map come from `sp` (tokenizer.json's are converted from it).
  HfUnigram(const sentencepiece::SentencePieceProcessor& sp, const std::string& model_path);

  // Appends the ids of one stretch of text between added tokens.
  void encode(std::string_view stretch, std::vector<std::int64_t>& ids) const;

 private:
  struct Piece {
    std::int64_t id;
    double score;
  };

  void encode_word(std::string_view word, std::vector<std::int64_t>& ids) const;

  std::unordered_map<std::string, Piece> pieces_;
  std::size_t longest_piece_ = 0;
  std::int64_t unk_id_ = 0;
  double unk_score_ = 0;
  PrecompiledNormalizer precompiled_;
};

}  // namespace clipper::tokenizer::detail
