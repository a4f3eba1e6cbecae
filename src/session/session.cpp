#include "clipper/session/session.hpp"

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/tokenizer/tokenizer.hpp"
#include "clipper/train/precision.hpp"

namespace clipper::session {
namespace {

void apply_model_config(model::Clip& model, const config::ModelConfig& m) {
  if (!m.init_from.empty()) {
    io::load_openclip_weights(model, m.init_from);
    CLIPPER_INFO("initialized from " << m.init_from);
  }
  if (m.patch_dropout > 0) model->set_patch_dropout(m.patch_dropout);
  if (m.lock_image)
    model->lock_image_tower(m.lock_image_unlocked_layers, m.lock_image_freeze_bn_stats);
  if (m.lock_text) model->lock_text_tower(m.lock_text_unlocked_layers);
  if (m.grad_checkpointing) model->set_grad_checkpointing(true);
}

std::shared_ptr<const tokenizer::Tokenizer> checked_tokenizer(const TokenizerFactory& make,
                                                              const model::ModelSpec& spec) {
  auto tok = make(spec.tokenizer, spec.context_length);
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
  auto spec = model::load_model_spec(cfg.model.name);
  model::apply_overrides(spec, {cfg.model.force_image_size, cfg.model.force_quick_gelu,
                                cfg.model.force_patch_dropout});
  if (cfg.loss.kind == config::LossKind::siglip) model::use_siglip_init(spec);
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

}  // namespace

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
  apply_model_config(s.model, cfg.model);
  if (!options.weights.empty()) io::load_openclip_weights(s.model, options.weights);
  if (options.ema_weights) io::load_checkpoint_ema(s.model, options.weights);
  s.model->to(s.device);
  if (options.make_tokenizer) s.tokenizer = checked_tokenizer(options.make_tokenizer, s.spec);
  return s;
}

}  // namespace clipper::session
