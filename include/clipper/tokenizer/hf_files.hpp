#pragma once
// The CLIP tokenizer as Hugging Face transformers' CLIPTokenizer reads it: vocab.json (token to
// id), merges.txt (a version line, then the merges in rank order), tokenizer_config.json and
// special_tokens_map.json, made from the same bpe_simple_vocab_16e6.txt.gz as the "clip"
// tokenizer (find_clip_vocab). The ids are open_clip's; the two special tokens are spelt
// <|startoftext|> and <|endoftext|> (OpenAI's release), the pad token is <|endoftext|>
// (open_clip pads with 0: the ids agree up to the end-of-text token), or, with ClipPad::id0, the
// token of id 0.
#include <cstdint>
#include <string>

namespace clipper::tokenizer {

// The pad token: <|endoftext|> (OpenAI's release, transformers' CLIP) or the token of id 0 (what
// clipper and open_clip pad with: a SigLIP-style text tower that pools the last position sees it).
enum class ClipPad { end_of_text, id0 };

void write_hf_clip_tokenizer(const std::string& out_dir, std::int64_t context_length,
                             ClipPad pad = ClipPad::end_of_text);

}  // namespace clipper::tokenizer
