#pragma once
// The CLIP tokenizer as Hugging Face transformers' CLIPTokenizer reads it: vocab.json (token to
// id), merges.txt (a version line, then the merges in rank order), tokenizer_config.json and
// special_tokens_map.json, made from the same bpe_simple_vocab_16e6.txt.gz as the "clip"
// tokenizer (find_clip_vocab). The ids are open_clip's; the two special tokens are spelt
// <|startoftext|> and <|endoftext|> (OpenAI's release), the pad token is <|endoftext|>
// (open_clip pads with 0: the ids agree up to the end-of-text token).
#include <cstdint>
#include <string>

namespace clipper::tokenizer {

void write_hf_clip_tokenizer(const std::string& out_dir, std::int64_t context_length);

// The folder of an "hf:NAME_OR_PATH" tokenizer. An existing folder is taken as it is. Otherwise
// NAME (a Hugging Face repository id such as timm/ViT-B-16-SigLIP, open_clip's
// hf_tokenizer_name) is looked for, first found wins: <dir>/NAME for each dir of
// $CLIPPER_HF_TOKENIZER_DIRS (':'-separated), then the Hugging Face cache
// ($HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
// ~/.cache/huggingface/hub) at models--ORG--NAME/snapshots/<refs/main, else the newest>/.
// Nothing is downloaded. Throws InputError listing where it looked and how to provide it.
std::string find_hf_tokenizer_dir(const std::string& name_or_path);

// Copies the files of an "hf:NAME_OR_PATH" spec's folder that transformers' AutoTokenizer reads
// (tokenizer_config.json, special_tokens_map.json, tokenizer.json, added_tokens.json and the
// SentencePiece model spiece.model / tokenizer.model, those present) into `out_dir` (created),
// so that a model exported there loads its tokenizer with the same ids. Throws InputError for a
// spec that is not "hf:" or a folder that the "hf:" tokenizer does not accept.
void copy_hf_tokenizer_files(const std::string& spec, const std::string& out_dir);

}  // namespace clipper::tokenizer
