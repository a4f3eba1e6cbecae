#pragma once
// The image towers behind one interface, and the registry that builds one from a spec
// (vision_cfg.tower). A new tower is a new file that derives from ImageTowerImpl plus one entry in
// image_tower.cpp's table; the CLIP model, training, export and the FLOP counter reach it through
// this interface only.
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "clipper/model/model_spec.hpp"

namespace clipper::model {

class Initializer;

class ImageTowerImpl : public torch::nn::Module {
 public:
  // images: float [B, 3, H, W], normalized; returns the unnormalized features [B, embed_dim].
  virtual at::Tensor forward(const at::Tensor& images) = 0;
  // The features and the image tokens a CoCa decoder reads ([B, L, width]); towers that give no
  // tokens (all but OpenCLIP's ViT) throw an InputError.
  virtual std::pair<at::Tensor, at::Tensor> forward_with_tokens(const at::Tensor& images);
  // The tower's initialization (OpenCLIP's for its towers, timm's for timm trunks), drawn from
  // `init`'s generator in a fixed order.
  virtual void init_parameters(Initializer& init) = 0;
  // LiT's groups, first to last: locking keeps the last `unlocked` groups trainable.
  virtual std::vector<std::vector<at::Tensor>> lock_groups() = 0;
  virtual void set_grad_checkpointing(bool on) = 0;
  // Fraction of patch tokens dropped in training; towers without patches (ResNet) ignore it.
  virtual void set_patch_dropout(double fraction);
  // Keeps BatchNorm layers in eval mode while training (towers with BatchNorm only).
  virtual void set_freeze_bn_stats(bool /*freeze*/) {}
};

// What the registry knows of a tower without building it: its size and work, for `clipper
// models`, the FLOP counter and the planner.
struct ImageTowerCost {
  std::int64_t params = 0;
  double flops = 0.0;    // one image's forward (flops.hpp's convention)
  double skipped = 0.0;  // part of `flops` clipper does not compute (pooled-token shortcuts)
  // For the activation estimate: tokens through the transformer (0 for a convnet).
  double tokens = 0.0;
};

// Builds the tower spec.image_tower names (a module named "visual" in the CLIP model).
std::shared_ptr<ImageTowerImpl> make_image_tower(const ModelSpec& spec);
// `training` counts the patches patch dropout keeps.
ImageTowerCost image_tower_cost(const ModelSpec& spec, bool training);

}  // namespace clipper::model
