#pragma once
// Where the "clip" tokenizer finds OpenCLIP's vocabulary, bpe_simple_vocab_16e6.txt.gz.
#include <string>
#include <utility>
#include <vector>

namespace clipper::tokenizer {

inline constexpr const char* kClipVocabFile = "bpe_simple_vocab_16e6.txt.gz";

// The paths tried, in order: $CLIPPER_BPE_VOCAB when set (then only it); otherwise
// <executable dir>/../share/clipper/, <libclipper_tokenizer dir>/../share/clipper/ (an installed
// tree), and the build tree's share/clipper/ (copied there by scripts/setup.sh or at configure).
std::vector<std::string> clip_vocab_candidates();

// The first candidate that exists; throws InputError listing every place it looked.
std::string find_clip_vocab();

// OpenCLIP's vocabulary as SimpleTokenizer builds it from the merges file: `tokens` in id order
// (256 byte characters, the same with "</w>", one merged string per merge, then
// "<start_of_text>" and "<end_of_text>": 49408), and the 48,894 merges in rank order. What the
// "clip" tokenizer encodes with, and what an export writes for other tokenizers.
struct ClipVocabulary {
  std::vector<std::string> tokens;
  std::vector<std::pair<std::string, std::string>> merges;
};
// Reads `bpe_simple_vocab_16e6.txt.gz` (gzip or plain text); InputError names a bad line.
ClipVocabulary read_clip_vocabulary(const std::string& vocab_path);

}  // namespace clipper::tokenizer
