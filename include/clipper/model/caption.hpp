#pragma once
// Caption generation with a CoCa model, as open_clip's CoCa.generate does it (its settings and
// defaults, its order of logit processing), without Python: beam search (open_clip's group beam
// search over transformers' BeamSearchScorer: num_beams split in num_beam_groups, scores are the
// sums of the decoder's raw logits, hypotheses ranked by score / length) or sampling (top_k, top_p)
// one token at a time. Every step runs the text tower and decoder over the whole prefix (open_clip
// keeps no key/value cache either), so the outputs are the same token for token.
#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <string>

#include "clipper/model/clip.hpp"

namespace clipper::model {

enum class CaptionMethod { beam_search, top_k, top_p };
std::optional<CaptionMethod> parse_caption_method(const std::string& word);
const char* name_of(CaptionMethod m);

// open_clip's generate() arguments and defaults.
struct CaptionOptions {
  CaptionMethod method = CaptionMethod::beam_search;  // generation_type
  std::int64_t seq_len = 30;      // the output's length, start token included, at most
  std::int64_t max_seq_len = 77;  // the decoder sees the last max_seq_len tokens (sampling)
  double temperature = 1.0;       // sampling
  double top_p = 0.1;             // keep the tokens of the top top_p probability mass
  std::int64_t top_k = 1;         // keep the top_k most probable tokens (1: greedy)
  std::int64_t pad_id = 0;        // the model's pad id (text_cfg.pad_id)
  std::int64_t eos_id = 49407;    // CLIP's end of text
  std::int64_t sot_id = 49406;    // CLIP's start of text
  std::int64_t num_beams = 6;
  std::int64_t num_beam_groups = 3;
  std::int64_t min_seq_len = 5;      // no end of text before this many tokens
  double repetition_penalty = 1.0;   // transformers' RepetitionPenaltyLogitsProcessor
  bool fixed_output_length = false;  // pad every row to seq_len
  std::uint64_t seed = 0;            // the sampling generator's seed
  // Checks the values as open_clip does (seq_len > min_seq_len, beams divisible by groups, ...);
  // throws InputError naming the option.
  void validate() const;
};

// images: [B, 3, H, W] normalized as the model expects. Returns int64 token ids [B, L], L <=
// seq_len, each row starting with sot_id; rows end with eos_id then pad_id. The model's mode is
// left as it was (generation runs in eval mode, without gradients).
at::Tensor generate_captions(ClipImpl& model, const at::Tensor& images, const CaptionOptions& o);

}  // namespace clipper::model
