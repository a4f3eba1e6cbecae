#pragma once
// A patch-level linear probe (`clipper probe-patches`, docs/evaluation.md "Patch probe"): how much
// of a picture's layout the image tower's un-pooled patch features hold. Each patch of a picture
// is labelled with the class of the region (docs/data.md "Regions") covering its centre, or
// background; a linear head (linear_probe.hpp's training) learns the labels from the frozen
// patch features of a training split and is scored on a test split. Used for issue 29's ablation
// of SigLIP 2's terms (LocCa, SILC, masked prediction) on synthetic localisation data
// (scripts/make_region_shards.py).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "clipper/data/regions.hpp"
#include "clipper/eval/eval.hpp"
#include "clipper/eval/linear_probe.hpp"

namespace clipper::data {
class Loader;
}

namespace clipper::eval {

// The labels [B, rows * cols] (int64, row-major patches) of B pictures cut into rows x cols
// patches: patch (r, c) takes the class index (in `classes`) of the region whose box holds its
// centre ((c + 0.5) / cols, (r + 0.5) / rows; a box [x0, x1) x [y0, y1)), the last such region
// listed when several do; none: background, classes.size(). A phrase not in `classes` is an
// InputError naming the sample (`keys`, parallel to `regions`) and the phrase.
at::Tensor patch_labels(const std::vector<std::vector<data::Region>>& regions,
                        const std::vector<std::string>& keys, std::int64_t rows, std::int64_t cols,
                        const std::vector<std::string>& classes);

// One split's patch features and their pictures' regions, in delivery order.
struct PatchSplit {
  at::Tensor features;  // float [images, rows * cols, D], CPU
  std::vector<std::vector<data::Region>> regions;
  std::vector<std::string> keys;
  std::int64_t rows = 0, cols = 0;
};

// The patch tokens (after ln_post, before any projection; the class token left out) of
// OpenCLIP's ViT for every picture `loader` delivers in one epoch (at most max_images; 0: all);
// a ViT with an attentional pooler (CoCa) gives its transformer's patch tokens before the pooler.
// The loader must read regions (LoaderOptions::regions_key) with the evaluation transform. A
// tower without per-patch outputs (a ResNet, a timm or NaFlex trunk) is an InputError.
PatchSplit patch_features(model::ClipImpl& model, data::Loader& loader, const Prepare& prepare,
                          std::int64_t max_images = 0);

struct PatchProbeResult {
  double patch_acc = 0;                    // top-1 over the test patches
  double patch_mean_per_class_recall = 0;  // over the classes present in the test patches
  double patch_mean_iou = 0;               // alike, each class's TP / (TP + FP + FN)
  double background_share = 0;             // test patches labelled background
  std::int64_t classes = 0;                // incl. background
  std::int64_t train_patches = 0, test_patches = 0;
  nlohmann::json to_json() const;
};

// The head trained on (train_x [N, D], train_y [N]) for `classes` classes (weight decay 0,
// linear_probe.hpp's AdamW and cosine schedule) and scored on (test_x, test_y).
PatchProbeResult patch_probe(const at::Tensor& train_x, const at::Tensor& train_y,
                             const at::Tensor& test_x, const at::Tensor& test_y,
                             std::int64_t classes, const LinearProbeOptions& options);

}  // namespace clipper::eval
