#pragma once
// Compute and size of an architecture, from its spec alone (no model is built).
//
// FLOPs = 2 x multiply-accumulates of the matmuls and convolutions of one forward pass for one
// sample (image + text), the convention of OpenCLIP's model_profile.csv: attention score and
// value products included; embeddings, norms, activations, pooling and softmax not counted. The
// ModifiedResNet attention pool is counted over all (HW + 1) queries as OpenCLIP computes it, and
// the transformers' last blocks over all tokens. clipper computes only what the pooled output
// needs (the attention pool's one query; the last block's class / end-of-text token, whose keys
// and values still cover every token): FlopCount::skipped is that difference.
#include <cstdint>

#include "clipper/model/model_spec.hpp"

namespace clipper::model {

struct FlopCount {
  double image = 0.0;
  double text = 0.0;
  double skipped = 0.0;  // part of image + text that clipper does not compute (see above)
  double total() const { return image + text; }
  double executed() const { return total() - skipped; }
};

// training = true counts the tokens patch dropout keeps (spec.patch_dropout) in the ViT.
FlopCount count_forward_flops(const ModelSpec& spec, bool training = false);
// Image + text forward FLOPs per sample (a training step is about 3x this).
double forward_flops_per_sample(const ModelSpec& spec);

struct ParamCount {
  std::int64_t image = 0;    // visual.*
  std::int64_t text = 0;     // token/positional embedding, transformer, ln_final, text_projection
  std::int64_t decoder = 0;  // CoCa's text_decoder.*
  std::int64_t other = 0;    // logit_scale, logit_bias
  std::int64_t total() const { return image + text + decoder + other; }
};

// Trainable parameters (BatchNorm running statistics are buffers, not counted).
ParamCount count_parameters(const ModelSpec& spec);
std::int64_t parameter_count(const ModelSpec& spec);

}  // namespace clipper::model
