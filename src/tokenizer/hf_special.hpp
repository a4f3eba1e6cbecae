#pragma once
// Private to src/tokenizer: the special tokens of a Hugging Face tokenizer folder as transformers
// 5 applies them (open_clip's HFTokenizer calls it with padding="max_length", truncation=True).
#include <sentencepiece_processor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "hf_folder.hpp"

namespace clipper::tokenizer::detail {

struct HfSpecials {
  std::vector<std::int64_t> prefix, suffix;  // ids before and after the text's (bos, eos)
  std::int64_t pad = 0;
  bool pad_left = false, truncate_left = false;
  // Token strings split out of the text before SentencePiece sees it (transformers' added tokens:
  // the named special tokens, additional/extra special tokens, added_tokens_decoder and the
  // model's control and user-defined pieces), with their ids.
  std::map<std::string, std::int64_t> added;
  std::int64_t vocab_size = 0;  // the model's pieces, or more if an added id lies beyond
};

HfSpecials read_hf_specials(const HfFolder& folder,
                            const sentencepiece::SentencePieceProcessor& sp);

}  // namespace clipper::tokenizer::detail
