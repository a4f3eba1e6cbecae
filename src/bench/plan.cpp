#include "clipper/bench/plan.hpp"

#include <algorithm>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "clipper/model/flops.hpp"
#include "clipper/model/image_tower.hpp"

namespace clipper::bench {
namespace {

constexpr double kGiB = 1024.0 * 1024 * 1024;

// Bytes one transformer block keeps for backward per token and unit of width: the fp32 residual
// stream into each norm (4 + 4), the norms' outputs, q/k/v, the attention output and the two MLP
// activations in the compute precision (2 bytes in bf16, 4 in fp32). SDPA's fused kernels keep no
// attention matrix.
double block_bytes_per_token_width(double mlp_ratio, bool bf16) {
  const double c = bf16 ? 2.0 : 4.0;
  return 8.0 + c * (1 + 3 + 1 + 1 + 2 * mlp_ratio);
}

double tower_activations(double tokens, double width, double layers, double mlp_ratio,
                         const PlanOptions& o) {
  const double per_layer = tokens * width * block_bytes_per_token_width(mlp_ratio, o.bf16);
  // Checkpointing keeps each block's fp32 input, and one block's activations while recomputing.
  if (o.grad_checkpointing) return layers * tokens * width * 4.0 + per_layer;
  return layers * per_layer;
}

double activations_per_sample(const model::ModelSpec& s, const PlanOptions& o) {
  double image = 0;
  if (s.is_resnet()) {
    // ModifiedResNet: about 4 saved tensors of the stage width per position in each bottleneck,
    // the stages halving the resolution and doubling the width (a rough figure).
    double hw = static_cast<double>(s.image_size / 4) * (s.image_size / 4);
    double width = static_cast<double>(s.vision_width);
    for (auto blocks : s.vision_resnet_layers) {
      image += blocks * hw * width * 4 * 4 * (o.bf16 ? 2.0 : 4.0);
      hw /= 4;
      width *= 2;
    }
  } else {  // a ViT: the tokens its tower counts (class token or not)
    const double tokens = model::image_tower_cost(s, false).tokens;
    image = tower_activations(tokens, static_cast<double>(s.vision_width),
                              static_cast<double>(s.vision_layers), s.vision_mlp_ratio, o);
  }
  const double text =
      tower_activations(static_cast<double>(s.context_length), static_cast<double>(s.text_width),
                        static_cast<double>(s.text_layers), s.text_mlp_ratio, o);
  return image + text;
}

// The CLIP loss: each rank's logits rows against every column (local loss) or the whole global
// matrix, in fp32, with their softmax and gradient; plus the gathered features.
// Chunked (loss.chunked): one B x B block of logits at a time and, at the backward's peak, the
// block sent and the block received (B x 2D features beside their B x 2D gradient accumulator)
// and this rank's feature gradients, whatever the world size; `clipper bench loss` measured
// 5.0 MiB for B = 256, D = 512 where this gives 5.25.
double loss_bytes(const model::ModelSpec& s, const PlanOptions& o) {
  const double b = static_cast<double>(o.batch), d = static_cast<double>(s.embed_dim);
  if (o.chunked && o.local_loss) return (b * b + 5 * b * 2 * d) * 4.0;
  const double global = static_cast<double>(o.batch * o.world);
  const double rows = o.local_loss ? static_cast<double>(o.batch) : global;
  const double logits = 2 * rows * global * 4.0 * 3;  // image and text logits, softmax, grad
  const double gathered = 2 * global * static_cast<double>(s.embed_dim) * 4.0;
  return logits + gathered;
}

// Full sharding's units (parameter counts): a block of either tower (attention and MLP
// weights), the text tower's rest (token and position embeddings, projection) and the image
// tower's rest (patch and position embeddings, projection); biases and norms left out. A ResNet
// tower's rest (stem, attention pool) is taken as its whole tower. Largest first.
std::vector<double> unit_sizes(const model::ModelSpec& s, double parameters) {
  const double tw = static_cast<double>(s.text_width), vw = static_cast<double>(s.vision_width);
  const double text_block = (4 + 2 * s.text_mlp_ratio) * tw * tw;
  std::vector<double> units = {
      text_block, static_cast<double>(s.vocab_size + s.context_length + s.embed_dim) * tw};
  const double text = static_cast<double>(s.text_layers) * text_block + units[1];
  if (s.is_resnet()) {
    units.push_back(parameters - text);
  } else {
    const double patch = static_cast<double>(s.patch_size * s.patch_size) * 3;
    const double tokens = model::image_tower_cost(s, false).tokens;
    units.push_back((4 + 2 * s.vision_mlp_ratio) * vw * vw);
    units.push_back((patch + tokens + static_cast<double>(s.embed_dim)) * vw);
  }
  std::sort(units.rbegin(), units.rend());
  return units;
}

// Parameters whole at once besides the shards: the two largest units (three with prefetch).
double gathered_units(const model::ModelSpec& s, double parameters, const PlanOptions& o) {
  const auto units = unit_sizes(s, parameters);
  const std::size_t n = std::min<std::size_t>(units.size(), o.prefetch ? 3 : 2);
  double sum = 0;
  for (std::size_t i = 0; i < n; ++i) sum += units[i];
  return sum;
}

// Gradients: zero 0/1 keep the full gradients and, on several ranks, the flat buckets they are
// copied into (zero 1 also on one rank, and its shard). Zero 2/3 keep the shards, at most two
// flat buckets in flight and the gradients of the bucket being filled: buckets of bucket_mb (at
// least the largest parameter, the token embedding) or, for zero 3, units (the largest twice and
// the next one, as measured). One rank does not overlap: every full gradient exists first.
double gradient_bytes(const model::ModelSpec& s, double p, const PlanOptions& o) {
  const double w = static_cast<double>(std::max<std::int64_t>(1, o.world));
  if (o.zero == 0) return o.world > 1 ? 8.0 * p : 4.0 * p;
  if (o.zero == 1) return 8.0 * p + 4.0 * p / w;
  const double embedding = static_cast<double>(s.vocab_size * s.text_width);
  const auto units = unit_sizes(s, p);
  const double buckets = o.zero >= 3 ? 4.0 * (2 * units[0] + units[1])
                                     : 3 * std::max(o.bucket_mb * 1024 * 1024, 4.0 * embedding);
  return 4.0 * p / w + (o.world > 1 ? buckets : 4.0 * p);
}

double bandwidth(const PlanOptions& o) {
  return (o.world > o.ranks_per_node ? o.inter_node_gbs : o.intra_node_gbs) * 1e9;
}

Collective ring(const std::string& name, double payload, double sent_factor, const PlanOptions& o) {
  Collective c{name, payload, payload * sent_factor, 0};
  c.seconds = c.sent_bytes / bandwidth(o);
  return c;
}

std::vector<Collective> collectives(const model::ModelSpec& s, const PlanOptions& o, double p) {
  std::vector<Collective> out;
  if (o.world <= 1) return out;
  const double w = static_cast<double>(o.world);
  const double grads = p * 4.0;  // fp32 gradients
  if (o.zero == 0) {
    out.push_back(ring("gradient all-reduce", grads, 2 * (w - 1) / w, o));
  } else {
    // What each collective is handed (as the process group counts it): the whole gradient
    // buckets to the reduce-scatter, this rank's shard of the parameters to the all-gather (it
    // receives the other W - 1 shards). The zero padding of each bucket to a multiple of W (under
    // W elements a bucket) is left out.
    out.push_back(ring("gradient reduce-scatter", grads, (w - 1) / w, o));
    // Full sharding gathers each unit for the forward and again for the backward (in bf16 with
    // gather_bf16); stages 1 and 2 once, after the update.
    const double shard = grads / w * (o.zero >= 3 && o.gather_bf16 ? 0.5 : 1.0);
    if (o.zero >= 3) {
      out.push_back(ring("parameter all-gather (forward)", shard, w - 1, o));
      out.push_back(ring("parameter all-gather (backward)", shard, w - 1, o));
    } else {
      out.push_back(ring("parameter all-gather", shard, w - 1, o));
    }
  }
  // Image and text features of this rank's batch (fp32 after normalization), to every rank; with
  // gather_with_grad their gradients come back the same way in backward.
  const double features = 2.0 * static_cast<double>(o.batch * s.embed_dim) * 4.0;
  // On Gloo the loss's check that every rank holds the same batch size: one int64 from each.
  if (o.gloo) out.push_back(ring("batch-size check", 8.0, w - 1, o));
  if (o.chunked && o.local_loss) {
    // Point to point: W - 1 shifts of the B x 2D block forward; in backward W - 1 of the block
    // with its gradient accumulator, and one of the accumulator home.
    out.push_back(ring("feature ring (forward)", features * (w - 1), 1, o));
    out.push_back(ring("feature ring (backward)", features * (2 * (w - 1) + 1), 1, o));
    out.push_back(ring("loss and NaN check", 3 * 8.0, 2 * (w - 1) / w, o));
    return out;
  }
  out.push_back(ring("feature all-gather", features, w - 1, o));
  if (o.gather_with_grad)
    out.push_back(ring("feature gradient reduce-scatter", features * w, (w - 1) / w, o));
  out.push_back(ring("loss and NaN check", 3 * 8.0, 2 * (w - 1) / w, o));
  return out;
}

}  // namespace

double Plan::comm_seconds() const {
  double t = 0;
  for (const auto& c : collectives) t += c.seconds;
  return t;
}

Plan make_plan(const model::ModelSpec& spec, const PlanOptions& o) {
  const double p = static_cast<double>(model::parameter_count(spec));
  const double w = static_cast<double>(std::max<std::int64_t>(1, o.world));
  Plan plan;
  // fp32 master parameters: whole on every rank (zero 0-2), or this rank's shards and the units
  // gathered at once (zero 3).
  plan.parameters = o.zero >= 3 ? 4.0 * p / w + 4.0 * gathered_units(spec, p, o) : 4.0 * p;
  // Autocast's bf16 copies of the weights, cached for the forward and saved for the backward.
  if (o.bf16) plan.parameters += 2.0 * p;
  plan.gradients = gradient_bytes(spec, p, o);
  plan.optimizer = o.zero >= 1 ? 8.0 * p / w : 8.0 * p;  // AdamW exp_avg + exp_avg_sq
  plan.activations = activations_per_sample(spec, o) * static_cast<double>(o.batch);
  plan.loss = loss_bytes(spec, o);
  plan.collectives = collectives(spec, o, p);
  return plan;
}

std::string plan_to_text(const model::ModelSpec& spec, const PlanOptions& o, const Plan& p) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(2);
  os << spec.name << " (" << model::parameter_count(spec) / 1e6 << " M parameters) | world "
     << o.world << " x batch " << o.batch << " | zero " << o.zero << " | "
     << (o.bf16 ? "bf16" : "fp32") << (o.grad_checkpointing ? " | grad checkpointing" : "") << "\n";
  os << "per-rank memory (GiB):\n"
     << "  parameters  " << p.parameters / kGiB << "\n  gradients   " << p.gradients / kGiB
     << "\n  optimizer   " << p.optimizer / kGiB << "\n  activations " << p.activations / kGiB
     << "\n  loss        " << p.loss / kGiB << "\n  total       " << p.total_memory() / kGiB
     << "\n";
  os << "per step and rank, at " << bandwidth(o) / 1e9 << " GB/s:\n";
  for (const auto& c : p.collectives)
    os << "  " << std::left << std::setw(32) << c.name << std::right << std::setw(10)
       << c.sent_bytes / 1e6 << " MB sent  " << std::setw(8) << 1000 * c.seconds << " ms\n";
  os << "  total " << 1000 * p.comm_seconds() << " ms\n";
  return os.str();
}

std::string plan_to_json(const model::ModelSpec& spec, const PlanOptions& o, const Plan& p) {
  nlohmann::ordered_json j = {{"model", spec.name},
                              {"world", o.world},
                              {"batch", o.batch},
                              {"zero", o.zero},
                              {"bf16", o.bf16},
                              {"parameters", p.parameters},
                              {"gradients", p.gradients},
                              {"optimizer", p.optimizer},
                              {"activations", p.activations},
                              {"loss", p.loss},
                              {"total_memory", p.total_memory()}};
  nlohmann::ordered_json cs = nlohmann::ordered_json::array();
  for (const auto& c : p.collectives)
    cs.push_back({{"name", c.name},
                  {"payload_bytes", c.payload_bytes},
                  {"sent_bytes", c.sent_bytes},
                  {"seconds", c.seconds}});
  j["collectives"] = cs;
  return j.dump();
}

}  // namespace clipper::bench
