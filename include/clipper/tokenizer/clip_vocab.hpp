#pragma once
// Where the "clip" tokenizer finds OpenCLIP's vocabulary, bpe_simple_vocab_16e6.txt.gz.
#include <string>
#include <vector>

namespace clipper::tokenizer {

inline constexpr const char* kClipVocabFile = "bpe_simple_vocab_16e6.txt.gz";

// The paths tried, in order: $CLIPPER_BPE_VOCAB when set (then only it); otherwise
// <executable dir>/../share/clipper/, <libclipper_tokenizer dir>/../share/clipper/ (an installed
// tree), and the build tree's share/clipper/ (copied there by scripts/setup.sh or at configure).
std::vector<std::string> clip_vocab_candidates();

// The first candidate that exists; throws InputError listing every place it looked.
std::string find_clip_vocab();

}  // namespace clipper::tokenizer
