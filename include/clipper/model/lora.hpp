#pragma once
// Low-rank adapters (LoRA, as peft builds them) for the towers' linear layers. An adapter beside a
// weight W [out, in] adds scale * B A dropout(x) to the layer's output, with
//   A     [rank, in]  kaiming-uniform (peft's init: U(+-1/sqrt(in))),
//   B     [out, rank] zeros (a new adapter changes nothing until it trains),
//   scale []          alpha / rank, a persistent buffer: a state dict holding adapters says by
//                     itself how to merge them (W + scale * B A), without the run's config.
// Names in the state dict: a model::Linear's adapter is its child "lora"
// (`transformer.resblocks.0.mlp.c_fc.lora.A`), the packed attention input projection's is
// Attention's child "in_proj_lora" (`...attn.in_proj_lora.A`, beside `attn.in_proj_weight`). In
// both the base weight is the adapter's prefix up to "lora." followed by "weight".
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace clipper::model {

struct LoraOptions {
  std::int64_t rank = 16;
  double alpha = 16.0;   // scale = alpha / rank
  double dropout = 0.0;  // on the adapter's input, in training
};

class LoraImpl : public torch::nn::Module {
 public:
  // An adapter for a weight [out, in], A drawn from `gen`.
  LoraImpl(std::int64_t in, std::int64_t out, const LoraOptions& options, at::Generator gen);
  // scale * B[rows] A dropout(x) for the output rows [first, first + rows) (the whole output when
  // rows < 0): [..., in] -> [..., rows].
  at::Tensor forward(const at::Tensor& x, std::int64_t first = 0, std::int64_t rows = -1);
  // scale * B A in fp32, [out, in]: what merging adds to the weight.
  at::Tensor delta() const;
  at::Tensor A, B, scale;
  double dropout = 0.0;
};
TORCH_MODULE(Lora);

// Which linear layers get adapters, by their place in a tower (the module names):
//   qkv       attention input projections: Attention's packed in_proj; q_proj/k_proj/v_proj, qkv,
//             q, kv under an attention module (a name holding "attn")
//   attn_out  the other linear layers under an attention module (out_proj, attnpool.c_proj, proj)
//   mlp_fc    an MLP's first layer (c_fc, fc1), under a module whose name holds "mlp"
//   mlp_proj  an MLP's other layers (c_proj, fc2)
//   other     any other model::Linear
struct LoraPlan {
  LoraOptions options;
  bool image = true, text = true;  // towers: "visual.*" is the image tower, the rest the text's
  bool qkv = true, attn_out = true, mlp_fc = true, mlp_proj = true, other = false;
  // Parameters that stay trainable beside the adapters: a name, or a module prefix of names
  // ("visual.ln_post", "logit_scale"). Every other parameter is frozen.
  std::vector<std::string> trainable;
};

// What apply_lora did.
struct LoraReport {
  std::int64_t adapters = 0;
  std::int64_t adapter_values = 0, trainable_values = 0, total_values = 0;
};

// Attaches adapters to `model`'s matching layers (A drawn from a generator seeded by `seed`, in
// module order: same seed, same adapters), then freezes every parameter but the adapters and
// plan.trainable. InputError when no layer matches, or a trainable name matches no parameter.
LoraReport apply_lora(torch::nn::Module& model, const LoraPlan& plan, std::uint64_t seed);

// A state dict's adapters merged into their weights: for each `P lora.A` (with `P lora.B`,
// `P lora.scale`), `P weight` += scale * B A (in fp32, stored in the weight's dtype) and the three
// adapter tensors are dropped. Returns how many adapters were merged. InputError naming the
// tensor when an adapter is incomplete, has no weight beside it, or its shapes do not fit.
std::int64_t merge_lora_state(std::vector<std::pair<std::string, at::Tensor>>& tensors,
                              const std::string& origin);
// Whether `name` is an adapter tensor (`...lora.A`, `...lora.B`, `...lora.scale`).
bool is_lora_tensor(const std::string& name);

}  // namespace clipper::model
