#pragma once
// The image towers, with OpenCLIP's parameter names (under `visual.` in the CLIP model).
//   VisionTransformer: conv1, class_embedding, positional_embedding, ln_pre, transformer, ln_post,
//   proj ModifiedResNet: conv1-3/bn1-3 (stem), layer1..4.{i}.{conv,bn}{1,2,3}, .downsample.{0,1},
//                   attnpool.{positional_embedding, q_proj, k_proj, v_proj, c_proj}
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include "clipper/model/coca.hpp"
#include "clipper/model/image_tower.hpp"
#include "clipper/model/linear.hpp"
#include "clipper/model/model_spec.hpp"
#include "clipper/model/transformer.hpp"

namespace clipper::model {

class VisionTransformerImpl : public ImageTowerImpl {
 public:
  explicit VisionTransformerImpl(const ModelSpec& spec);
  // images: [B, 3, H, W] normalized; returns [B, embed_dim].
  at::Tensor forward(const at::Tensor& images) override;
  // CoCa's output (open_clip's output_tokens): with the attentional pooler, its first output
  // (after ln_post) projected, and its other outputs; without, the class token projected and the
  // patch tokens after ln_post.
  std::pair<at::Tensor, at::Tensor> forward_with_tokens(const at::Tensor& images) override;
  // OpenCLIP's init: embeddings and proj ~ N(0, width^-0.5), nn.MultiheadAttention's xavier
  // in_proj, PyTorch's defaults elsewhere.
  void init_parameters(Initializer& init) override;
  // [conv1, class_embedding, positional_embedding, ln_pre], each block but the last,
  // [last block, ln_post], [proj].
  std::vector<std::vector<at::Tensor>> lock_groups() override;
  void set_grad_checkpointing(bool on) override { transformer->grad_checkpointing = on; }
  void set_patch_dropout(double fraction) override { patch_dropout = fraction; }
  // Tokens after the patch embedding, class token and positional embedding (and, in training,
  // patch dropout), before ln_pre: [B, 1 + kept, width].
  at::Tensor embed(const at::Tensor& images);

  torch::nn::Conv2d conv1{nullptr};
  at::Tensor class_embedding, positional_embedding, proj;
  LayerNorm ln_pre{nullptr}, ln_post{nullptr};
  Transformer transformer{nullptr};
  AttentionalPooler attn_pool{nullptr};  // vision_cfg.attentional_pool
  std::int64_t width, patch_size, grid;
  double patch_dropout =
      0.0;  // fraction of patch tokens dropped in training; the class token stays
};
TORCH_MODULE(VisionTransformer);

// 1x1 conv (`0`) and BatchNorm (`1`) after an AvgPool2d(stride) that has no parameters.
class DownsampleImpl : public torch::nn::Module {
 public:
  DownsampleImpl(std::int64_t in, std::int64_t out, std::int64_t stride);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
  std::int64_t stride;
};
TORCH_MODULE(Downsample);

class BottleneckImpl : public torch::nn::Module {
 public:
  static constexpr std::int64_t kExpansion = 4;
  BottleneckImpl(std::int64_t inplanes, std::int64_t planes, std::int64_t stride);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  Downsample downsample{nullptr};
  std::int64_t stride;
};
TORCH_MODULE(Bottleneck);

// Attention pooling: the mean token is prepended, a positional embedding added, and the output is
// the attention result at that first token, projected by c_proj.
class AttentionPool2dImpl : public torch::nn::Module {
 public:
  AttentionPool2dImpl(std::int64_t spatial, std::int64_t dim, std::int64_t heads,
                      std::int64_t output_dim);
  at::Tensor forward(const at::Tensor& x);  // [B, C, H, W] -> [B, output_dim]
  at::Tensor positional_embedding;
  Linear k_proj{nullptr}, q_proj{nullptr}, v_proj{nullptr}, c_proj{nullptr};
  std::int64_t heads;
};
TORCH_MODULE(AttentionPool2d);

class ModifiedResNetImpl : public ImageTowerImpl {
 public:
  explicit ModifiedResNetImpl(const ModelSpec& spec);
  at::Tensor forward(const at::Tensor& images) override;
  at::Tensor stem(const at::Tensor& images);
  // OpenCLIP's init: PyTorch defaults, attention pool ~ N(0, C^-0.5), each bottleneck's last
  // BatchNorm at zero.
  void init_parameters(Initializer& init) override;
  // [stem], layer1..4, [attnpool].
  std::vector<std::vector<at::Tensor>> lock_groups() override;
  // A ResNet's stages are not checkpointed (as in OpenCLIP).
  void set_grad_checkpointing(bool) override {}
  // With the BatchNorm statistics frozen, train() leaves the BatchNorm layers in eval mode.
  void train(bool on = true) override;
  void set_freeze_bn_stats(bool freeze) override;

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::ModuleList layer1{nullptr}, layer2{nullptr}, layer3{nullptr}, layer4{nullptr};
  AttentionPool2d attnpool{nullptr};
  bool freeze_bn_stats = false;
};
TORCH_MODULE(ModifiedResNet);

}  // namespace clipper::model
