#include "clipper/session/session.hpp"

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <optional>

#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/model/lora.hpp"
#include "clipper/tokenizer/tokenizer.hpp"
#include "clipper/train/precision.hpp"

namespace clipper::session {
namespace {

// The run log's line for model.init_from: what was loaded from where, what kept its init, and
// what the locks leave to train.
void log_init_from(const model::Clip& model, const config::ModelConfig& m,
                   const io::LoadReport& r) {
  std::int64_t tensors = 0, frozen = 0;
  for (const auto& p : model->parameters()) {
    ++tensors;
    if (!p.requires_grad()) ++frozen;
  }
  std::string kept;
  for (const auto& n : r.left_at_init) kept += (kept.empty() ? "" : ", ") + n;
  CLIPPER_INFO("model.init_from: loaded "
               << r.tensors << " tensors (" << r.values << " values) from '" << m.init_from
               << "' into " << model->spec().name
               << "; left at their init: " << (kept.empty() ? "none" : kept) << "; " << frozen
               << " of " << tensors << " parameters frozen"
               << (m.lock_image || m.lock_text ? std::string(" (model.lock_image/lock_text)")
                                               : std::string()));
}

// The lora section as the model's plan: the target names expanded, the towers.
model::LoraPlan lora_plan(const config::LoraConfig& c) {
  using config::LoraTarget;
  model::LoraPlan p;
  p.options = {c.rank, c.alpha, c.dropout};
  p.image = c.towers != config::LoraTowers::text;
  p.text = c.towers != config::LoraTowers::image;
  p.qkv = p.attn_out = p.mlp_fc = p.mlp_proj = p.other = false;
  for (const auto t : c.targets) {
    const bool all = t == LoraTarget::all, attn = all || t == LoraTarget::attn,
               mlp = all || t == LoraTarget::mlp;
    p.qkv = p.qkv || attn || t == LoraTarget::qkv;
    p.attn_out = p.attn_out || attn || t == LoraTarget::attn_out;
    p.mlp_fc = p.mlp_fc || mlp || t == LoraTarget::mlp_fc;
    p.mlp_proj = p.mlp_proj || mlp || t == LoraTarget::mlp_proj;
    p.other = p.other || all;
  }
  p.trainable = c.trainable;
  return p;
}

// Adapters on the targeted layers, every base weight frozen (lora.rank > 0).
void apply_lora(model::Clip& model, const config::LoraConfig& c, std::uint64_t seed) {
  if (c.targets.empty()) throw core::InputError("lora.targets is empty: name the layers to adapt");
  const auto r = model::apply_lora(*model, lora_plan(c), seed);
  CLIPPER_INFO("LoRA: " << r.adapters << " adapters (rank " << c.rank << ", alpha " << c.alpha
                        << ", dropout " << c.dropout << ", towers " << config::name_of(c.towers)
                        << "); trainable " << r.trainable_values << " of " << r.total_values
                        << " values (" << r.adapter_values << " in adapters), base weights frozen");
}

void apply_model_config(model::Clip& model, const config::Config& cfg) {
  const auto& m = cfg.model;
  std::optional<io::LoadReport> loaded;
  if (!m.init_from.empty()) loaded = io::load_openclip_weights(model, m.init_from);
  if (m.patch_dropout > 0) model->set_patch_dropout(m.patch_dropout);
  if (m.lock_image)
    model->lock_image_tower(m.lock_image_unlocked_layers, m.lock_image_freeze_bn_stats);
  if (m.lock_text) model->lock_text_tower(m.lock_text_unlocked_layers);
  if (cfg.lora.rank > 0) apply_lora(model, cfg.lora, static_cast<std::uint64_t>(cfg.train.seed));
  if (m.grad_checkpointing) model->set_grad_checkpointing(true);
  if (loaded) log_init_from(model, m, *loaded);
}

// A SigLIP model trained with the CLIP loss: its logit_bias gets no gradient, which a gradient
// all-reduce or ZeRO's flat buffers would meet as a parameter without one (open_clip issue
// 1076). It is frozen at its value instead, and exported as it is.
void freeze_unused_logit_bias(model::Clip& model, config::LossKind loss) {
  if (loss == config::LossKind::siglip || !model->logit_bias.defined()) return;
  if (!model->logit_bias.requires_grad()) return;
  model->logit_bias.set_requires_grad(false);
  CLIPPER_INFO("logit_bias frozen at " << model->logit_bias.item<double>()
                                       << ": the CLIP loss does not use it");
}

std::shared_ptr<const tokenizer::Tokenizer> checked_tokenizer(const TokenizerFactory& make,
                                                              const model::ModelSpec& spec) {
  auto tok = make(spec.tokenizer, spec.context_length, spec.tokenizer_clean);
  if (tok->vocab_size() > spec.vocab_size)
    throw core::InputError("tokenizer '" + spec.tokenizer + "' has " +
                           std::to_string(tok->vocab_size()) + " ids but model " + spec.name +
                           " has vocab_size " + std::to_string(spec.vocab_size) + " (" + spec.path +
                           "): set text_cfg.vocab_size to at least the tokenizer's size");
  return tok;
}

// The model from model.name (with the loss's init) and, when the weights record theirs, checked
// against it; without model.name, the weights' own.
model::ModelSpec session_spec(const config::Config& cfg, const std::string& weights) {
  const auto described = weights.empty() ? std::nullopt : io::described_model(weights);
  if (cfg.model.name.empty()) {
    if (!described)
      throw core::InputError(
          "no model given (model.name, or --model for embed), and the weights '" + weights +
          "' do not record theirs (an export's open_clip_config.json or a checkpoint's "
          "config.yaml next to them)");
    CLIPPER_INFO("model " << described->name << " as recorded in " << described->path);
    return *described;
  }
  auto spec = io::run_model_spec(cfg);
  if (!described) return spec;
  const std::string diff = io::architecture_difference(spec, *described);
  if (!diff.empty())
    throw core::InputError("model '" + spec.name + "' (" + spec.path +
                           ") is not the model that the weights '" + weights + "' record: '" +
                           described->name + "' (" + described->path + "); they differ in " + diff +
                           ". Leave out the model to use the weights' own");
  // The weights' logit_scale / logit_bias decide whether the model has a bias.
  spec.init_logit_scale = described->init_logit_scale;
  spec.init_logit_bias = described->init_logit_bias;
  return spec;
}

// The teacher sees the student's batches: the same pixels, normalization and token ids.
void check_teacher_reads_batches(const model::ModelSpec& t, const model::ModelSpec& s) {
  std::string why;
  if (t.image_size != s.image_size)
    why = "image size " + std::to_string(t.image_size) + " vs the student's " +
          std::to_string(s.image_size);
  else if (t.tokenizer != s.tokenizer)
    why = "tokenizer '" + t.tokenizer + "' vs the student's '" + s.tokenizer + "'";
  else if (t.context_length < s.context_length)
    why = "context length " + std::to_string(t.context_length) + " below the student's " +
          std::to_string(s.context_length);
  else if (t.max_seq_len != s.max_seq_len || (s.naflex_inputs() && t.patch_size != s.patch_size))
    why = "NaFlex patches: preprocess_cfg.max_seq_len " + std::to_string(t.max_seq_len) +
          " and patch size " + std::to_string(t.patch_size) + " vs the student's " +
          std::to_string(s.max_seq_len) + " and " + std::to_string(s.patch_size);
  if (!why.empty())
    throw core::InputError("loss.distill_model: the teacher '" + t.name +
                           "' cannot read the student's batches (" + why + ")");
  if (t.mean != s.mean || t.std != s.std)
    CLIPPER_WARN("the teacher '" << t.name << "' normalizes images with another mean/std than "
                                 << "the student '" << s.name
                                 << "'; it gets the student's (as OpenCLIP's --distill-model)");
}

}  // namespace

model::Clip open_teacher(const config::Config& cfg, const Session& s) {
  const auto& l = cfg.loss;
  if (l.distill_from.empty()) {
    if (!l.distill_model.empty())
      throw core::InputError("loss.distill_model is '" + l.distill_model +
                             "' but loss.distill_from is empty: give the teacher's weights");
    return model::Clip(nullptr);
  }
  if (l.kind != config::LossKind::clip)
    throw core::InputError(std::string("loss.distill_from: distillation uses OpenCLIP's "
                                       "DistillClipLoss, which needs loss.kind clip, not ") +
                           config::name_of(l.kind));
  const std::string weights = io::resolve_weights(l.distill_from);
  if (l.distill_model.empty() && !io::described_model(weights))
    throw core::InputError("loss.distill_model is empty and the teacher's weights '" + weights +
                           "' do not record their model: name it in loss.distill_model");
  config::Config tc;  // the teacher's own model section, as model.name + model.init_from
  tc.model.name = l.distill_model;
  const model::ModelSpec spec = session_spec(tc, weights);
  check_teacher_reads_batches(spec, s.spec);
  model::Clip teacher = model::create_model(spec, static_cast<std::uint64_t>(cfg.train.seed));
  io::load_openclip_weights(teacher, weights);
  teacher->eval();
  for (auto& p : teacher->parameters()) p.requires_grad_(false);
  teacher->to(s.device);
  CLIPPER_INFO("distilling from " << spec.name << " (" << weights << "), frozen");
  return teacher;
}

bool use_cuda(config::Device device) {
  if (device == config::Device::cuda && !torch::cuda::is_available())
    throw core::InputError("train.device is cuda but no CUDA device is available");
  return device == config::Device::cuda ||
         (device == config::Device::automatic && torch::cuda::is_available());
}

bool use_bf16(config::Precision precision, bool cuda) {
  return precision == config::Precision::bf16 ||
         (cuda && precision == config::Precision::automatic);
}

int Session::rank() const {
  return pg->rank();
}

int Session::world_size() const {
  return pg->size();
}

std::string Session::describe() const {
  return world.describe() + " | device " + device.str() + (bf16 ? " bf16" : " fp32") + " | " +
         pg->backend_name();
}

Session open_session(const config::Config& cfg, const SessionOptions& options) {
  Session s;
  s.spec = session_spec(cfg, options.weights);  // a model mistake shows before anything starts
  s.world = dist::discover_world(cfg.dist);
  const bool cuda = use_cuda(cfg.train.device);
  s.device = cuda ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(s.world.local_rank))
                  : at::Device(at::kCPU);
  s.bf16 = use_bf16(cfg.train.precision, cuda);
  if (cfg.train.threads > 0) at::set_num_threads(static_cast<int>(cfg.train.threads));
  if (cuda) train::set_tf32(cfg.train.tf32);
  s.pg = dist::ProcessGroup::create(s.world, cfg.dist, cuda);

  // Each rank's own stream for dropout; the init itself is seeded by train.seed alone.
  const auto seed = static_cast<std::uint64_t>(cfg.train.seed);
  at::manual_seed(seed * 1000003ull + static_cast<std::uint64_t>(s.pg->rank()));
  s.model = model::create_model(s.spec, seed);
  apply_model_config(s.model, cfg);
  freeze_unused_logit_bias(s.model, cfg.loss.kind);
  if (!options.weights.empty()) {
    const auto r = io::load_openclip_weights(s.model, options.weights);
    CLIPPER_INFO("weights: " << r.tensors << " tensors from '" << options.weights << "'");
  }
  if (options.ema_weights) io::load_checkpoint_ema(s.model, options.weights);
  s.model->to(s.device);
  if (options.make_tokenizer) s.tokenizer = checked_tokenizer(options.make_tokenizer, s.spec);
  return s;
}

}  // namespace clipper::session
