#pragma once
// Continuing an OpenCLIP run (checkpoint.resume_openclip, docs/training.md): open_clip_train
// saves `epoch_N.pt` after each epoch as {"epoch": N (epochs completed), "name", "state_dict",
// "optimizer": torch.optim.AdamW.state_dict(), "scaler" with amp}. The optimizer's state is keyed
// by parameter index in its param groups' order, which main.py builds as: group 0, the trainable
// parameters excluded from weight decay (ndim < 2, or "bn", "ln", "bias", "logit_scale" in the
// name), group 1, the other trainable ones, each in named_parameters() order. That order maps each
// index to an OpenCLIP name, which is clipper's parameter name. A file whose group sizes fit
// open_clip main's split instead (optim.no_decay modern) is read with that one. The run keeps the
// file's rule: optim.no_decay auto with checkpoint.resume_openclip is openclip3
// (train::StepConfig::from).
#include <cstdint>
#include <string>

#include "clipper/io/safetensors.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/optim/adamw.hpp"
#include "clipper/optim/sharded_adamw.hpp"

namespace clipper::train {
class TrainStep;
}

namespace clipper::trainer {

struct OpenClipResume {
  std::string path;
  std::int64_t epoch = 0;      // epochs completed: the run continues with epoch `epoch`
  std::string name;            // OpenCLIP's run name (--name)
  io::TensorList state_dict;   // weights, "module." stripped
  optim::FlatShards moments;   // AdamW's moments and step counts by clipper name, whole (1 rank)
  double optimizer_steps = 0;  // AdamW's largest step count: the optimizer steps OpenCLIP took
  bool has_scaler = false;     // a GradScaler state (amp), which clipper does not use
  // The weight-decay split the file's two groups were made with, told by their sizes: open_clip
  // 3.3.0's main.py (openclip3) or open_clip main's optim.py (modern).
  config::NoDecay no_decay = config::NoDecay::openclip3;
};

// Reads `path` and maps its AdamW state onto `model`'s trainable parameters. InputError naming
// the file (and the parameter) for: no "epoch", "state_dict" or "optimizer" (a bare state dict
// belongs in model.init_from); a parameter the model lacks or one of the model's trainable
// parameters the file lacks; a weight or moment of another shape; param groups that do not split
// as main.py's do (another model or other locked towers); state that is not AdamW's (other keys),
// amsgrad or maximize. The run's settings win over the file's: a beta, eps or weight decay that
// differs from `adamw` / `weight_decay`, or a weight-decay split other than `no_decay` (the run's
// rule), is logged as a warning.
OpenClipResume read_openclip_resume(const std::string& path, const model::ClipImpl& model,
                                    const optim::AdamWOptions& adamw, double weight_decay,
                                    config::NoDecay no_decay = config::NoDecay::openclip3);

// The weights into the step's model and the moments into its optimizer (any dist.zero, any
// world size: each rank takes its own shard of the whole moments); a weight average restarts at
// the loaded weights.
void load_openclip_resume(const OpenClipResume& resume, train::TrainStep& step);

}  // namespace clipper::trainer
