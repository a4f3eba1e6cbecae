#pragma once
// Private to src/tokenizer: a Hugging Face tokenizer folder of SigLIP (T5Tokenizer) or SigLIP 2
// (GemmaTokenizer), its files checked, its JSON read.
#include <nlohmann/json.hpp>
#include <string>

namespace clipper::tokenizer::detail {

// transformers' tokenizer classes the "hf:" tokenizer implements: T5Tokenizer (SentencePiece
// Unigram, spiece.model, always appends the end token) and GemmaTokenizer (SentencePiece BPE with
// byte fallback, tokenizer.model, special tokens as tokenizer.json or the flags say).
enum class HfKind { t5, gemma };

struct HfFolder {
  std::string dir;
  HfKind kind = HfKind::t5;
  std::string tokenizer_class;    // as tokenizer_config.json spells it
  std::string model_path;         // the SentencePiece model
  std::string tokenizer_json;     // "" when absent
  nlohmann::json config;          // tokenizer_config.json
  nlohmann::json special_map;     // special_tokens_map.json, {} when absent
  nlohmann::json post_processor;  // tokenizer.json's, null when absent
};

// Reads `dir` (an existing folder). Throws InputError naming the file and what was expected.
HfFolder read_hf_folder(const std::string& dir);

}  // namespace clipper::tokenizer::detail
