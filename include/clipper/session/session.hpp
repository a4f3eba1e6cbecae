#pragma once
// What every verb that runs a model needs, built once from the config in one order: the world
// (ranks), the process group, the device, the precision, the model spec, the model (with the
// config's init weights, dropout, locks and checkpointing applied, on the device) and, when asked
// for, the tokenizer. train, eval, embed and bench all start from a Session.
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>

#include "clipper/config/config.hpp"
#include "clipper/dist/world.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/model/model_spec.hpp"

namespace clipper::dist {
class ProcessGroup;
}
namespace clipper::tokenizer {
class Tokenizer;
}

namespace clipper::session {

// train.device: auto takes CUDA when there is a device; cuda without one is an InputError.
bool use_cuda(config::Device device);
// train.precision: auto is bf16 autocast on CUDA and fp32 on the CPU.
bool use_bf16(config::Precision precision, bool cuda);

// name: the model's tokenizer spec; clean: its text_cfg.tokenizer_clean word (hf: tokenizers).
using TokenizerFactory = std::function<std::shared_ptr<const tokenizer::Tokenizer>(
    const std::string& name, std::int64_t context_length, const std::string& clean)>;

struct SessionOptions {
  // Weights loaded after the config's model.init_from (eval and embed: --weights); empty: none.
  std::string weights;
  // With `weights` a checkpoint's model.safetensors: load its weight average over them
  // (eval.use_ema; io::load_checkpoint_ema).
  bool ema_weights = false;
  // The tokenizer maker (tokenizer::make_tokenizer where the data libraries are built); empty:
  // the session has no tokenizer (bench).
  TokenizerFactory make_tokenizer;
};

struct Session {
  dist::World world;
  std::shared_ptr<dist::ProcessGroup> pg;
  at::Device device{at::kCPU};
  bool bf16 = false;
  model::ModelSpec spec;
  model::Clip model{nullptr};
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer;  // null unless asked for

  int rank() const;
  int world_size() const;
  // "device cuda:0 bf16 | nccl": for the start-up log line.
  std::string describe() const;
};

// Uses cfg.dist (the group), cfg.train (device, precision, threads, tf32, seed), cfg.model and
// cfg.loss.kind (SigLIP sets the init, model::use_siglip_init). Without model.name the model is
// the one the weights record (io::described_model); a model.name that disagrees with it is an
// InputError naming both.
Session open_session(const config::Config& cfg, const SessionOptions& options = {});

// The frozen distillation teacher (loss.distill_from, an OpenCLIP-format weights file or an export
// or checkpoint folder; loss.distill_model its architecture, which may be left out when the
// weights record theirs), loaded as model.init_from is, on the session's device, in eval mode and
// without gradients; null when loss.distill_from is empty. InputError for loss.distill_model
// without loss.distill_from, with loss.kind siglip, and for a teacher that cannot read the
// student's batches (another image size or tokenizer, a shorter context).
model::Clip open_teacher(const config::Config& cfg, const Session& s);

}  // namespace clipper::session
