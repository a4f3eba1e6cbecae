#include "clipper/eval/patch_probe.hpp"

#include <ATen/ATen.h>

#include <algorithm>

#include "clipper/core/error.hpp"
#include "clipper/data/loader.hpp"
#include "clipper/eval/metrics.hpp"
#include "clipper/model/vision.hpp"

namespace clipper::eval {

at::Tensor patch_labels(const std::vector<std::vector<data::Region>>& regions,
                        const std::vector<std::string>& keys, std::int64_t rows, std::int64_t cols,
                        const std::vector<std::string>& classes) {
  core::require(rows > 0 && cols > 0, "patch labels: the grid must have rows and columns");
  core::require(keys.size() == regions.size(), "patch labels: one key per picture");
  const auto B = static_cast<std::int64_t>(regions.size());
  const auto background = static_cast<std::int64_t>(classes.size());
  auto labels = at::full({B, rows * cols}, background, at::kLong);
  auto* out = labels.data_ptr<std::int64_t>();
  for (std::int64_t b = 0; b < B; ++b)
    for (const auto& r : regions[static_cast<std::size_t>(b)]) {
      const auto it = std::find(classes.begin(), classes.end(), r.phrase);
      if (it == classes.end())
        throw core::InputError("patch probe: sample '" + keys[static_cast<std::size_t>(b)] +
                               "' has a region '" + r.phrase + "' that is not one of the " +
                               std::to_string(classes.size()) + " classes");
      const auto k = static_cast<std::int64_t>(it - classes.begin());
      for (std::int64_t y = 0; y < rows; ++y) {
        const double cy = (static_cast<double>(y) + 0.5) / static_cast<double>(rows);
        if (cy < r.y0 || cy >= r.y1) continue;
        for (std::int64_t x = 0; x < cols; ++x) {
          const double cx = (static_cast<double>(x) + 0.5) / static_cast<double>(cols);
          if (cx >= r.x0 && cx < r.x1) out[b * rows * cols + y * cols + x] = k;
        }
      }
    }
  return labels;
}

namespace {

model::VisionTransformerImpl& patch_tower(model::ClipImpl& model) {
  auto vit = model.visual_vit;
  core::require(!vit.is_empty(),
                "patch probe: the model's image tower has no per-patch outputs "
                "(only OpenCLIP's ViT, vision_cfg without timm_model_name or "
                "NaFlex, is supported)");
  return *vit;
}

// The patch tokens after ln_post; with an attentional pooler (CoCa), whose outputs are queries,
// the transformer's patch tokens before it (ln_post belongs to the pooled outputs there).
at::Tensor patch_tokens(model::VisionTransformerImpl& vit, const at::Tensor& images) {
  if (vit.attn_pool.is_empty()) return vit.forward_with_tokens(images).second;
  const auto x = vit.transformer->forward(vit.ln_pre->forward(vit.embed(images)));
  return x.narrow(1, 1, x.size(1) - 1);
}

}  // namespace

PatchSplit patch_features(model::ClipImpl& model, data::Loader& loader, const Prepare& prepare,
                          std::int64_t max_images) {
  core::require(!loader.options().regions_key.empty(),
                "patch probe: the loader must read regions (regions_key)");
  auto& vit = patch_tower(model);
  PatchSplit s;
  s.rows = s.cols = vit.grid;
  std::vector<at::Tensor> parts;
  std::int64_t n = 0;
  at::NoGradGuard no_grad;
  model.eval();
  while (auto b = loader.next()) {
    if (max_images > 0 && n >= max_images) continue;  // (drain the epoch)
    std::int64_t take = b->images.size(0);
    if (max_images > 0) take = std::min(take, max_images - n);
    const auto tokens = patch_tokens(vit, prepare(b->images.narrow(0, 0, take)));
    core::require(tokens.size(1) == s.rows * s.cols,
                  "patch probe: the tower gave " + std::to_string(tokens.size(1)) +
                      " patch tokens, its grid has " + std::to_string(s.rows * s.cols));
    parts.push_back(tokens.to(at::kFloat).cpu());
    for (std::int64_t i = 0; i < take; ++i) {
      s.regions.push_back(b->regions[static_cast<std::size_t>(i)]);
      s.keys.push_back(b->keys[static_cast<std::size_t>(i)]);
    }
    n += take;
  }
  core::require(n > 0, "patch probe: the split '" + loader.options().shards + "' has no pictures");
  s.features = at::cat(parts);
  return s;
}

nlohmann::json PatchProbeResult::to_json() const {
  return {{"patch_acc", patch_acc},
          {"patch_mean_per_class_recall", patch_mean_per_class_recall},
          {"patch_mean_iou", patch_mean_iou},
          {"background_share", background_share},
          {"classes", classes},
          {"train_patches", train_patches},
          {"test_patches", test_patches}};
}

namespace {

// The mean over the classes present in `target` of TP / (TP + FP + FN).
double mean_iou(const at::Tensor& pred, const at::Tensor& target, std::int64_t classes) {
  double sum = 0;
  std::int64_t present = 0;
  for (std::int64_t k = 0; k < classes; ++k) {
    const auto t = target.eq(k), p = pred.eq(k);
    const auto in_target = t.sum().item<std::int64_t>();
    if (in_target == 0) continue;
    const auto inter = (t & p).sum().item<std::int64_t>();
    const auto uni = (t | p).sum().item<std::int64_t>();
    sum += static_cast<double>(inter) / static_cast<double>(uni);
    ++present;
  }
  return sum / static_cast<double>(present);
}

}  // namespace

PatchProbeResult patch_probe(const at::Tensor& train_x, const at::Tensor& train_y,
                             const at::Tensor& test_x, const at::Tensor& test_y,
                             std::int64_t classes, const LinearProbeOptions& options) {
  core::require(
      train_x.dim() == 2 && train_x.size(0) > 0 && test_x.dim() == 2 && test_x.size(0) > 0,
      "patch probe: both splits need patches");
  core::require(classes >= 2, "patch probe: needs at least 2 classes (background included)");
  const auto y = train_y.to(at::kLong), ty = test_y.to(at::kLong);
  const auto logits = train_linear_head(train_x, y, classes, 0.0, options, test_x);
  const auto m = classification_metrics(logits, ty);
  PatchProbeResult r;
  r.patch_acc = m.acc1;
  r.patch_mean_per_class_recall = m.mean_per_class_recall;
  r.patch_mean_iou = mean_iou(logits.argmax(1), ty, classes);
  r.background_share = ty.eq(classes - 1).to(at::kDouble).mean().item<double>();
  r.classes = classes;
  r.train_patches = train_x.size(0);
  r.test_patches = test_x.size(0);
  return r;
}

}  // namespace clipper::eval
