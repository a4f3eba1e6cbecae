#include "clipper/model/image_tower.hpp"

#include "clipper/core/error.hpp"
#include "clipper/model/naflex_vit.hpp"
#include "clipper/model/timm_vit.hpp"
#include "clipper/model/vision.hpp"
#include "tower_costs.hpp"

namespace clipper::model {
namespace {

// The registry: one row per vision_cfg.tower. A new tower adds its file and a row here.
struct TowerEntry {
  ImageTowerKind kind;
  std::shared_ptr<ImageTowerImpl> (*build)(const ModelSpec&);
  ImageTowerCost (*cost)(const ModelSpec&, bool training);
};

template <typename Tower>
std::shared_ptr<ImageTowerImpl> build(const ModelSpec& spec) {
  return std::make_shared<Tower>(spec);
}

const TowerEntry kTowers[] = {
    {ImageTowerKind::vit, build<VisionTransformerImpl>, openclip_vit_cost},
    {ImageTowerKind::resnet, build<ModifiedResNetImpl>, resnet_cost},
    {ImageTowerKind::timm_vit, build<TimmVitImpl>, timm_vit_cost},
    {ImageTowerKind::naflex_vit, build<NaflexVitImpl>, naflex_vit_cost},
};

const TowerEntry& entry(ImageTowerKind kind) {
  for (const auto& e : kTowers)
    if (e.kind == kind) return e;
  throw core::Error(std::string("no image tower registered for '") + name_of(kind) + "'");
}

}  // namespace

void ImageTowerImpl::set_patch_dropout(double /*fraction*/) {}

std::pair<at::Tensor, at::Tensor> ImageTowerImpl::forward_with_tokens(const at::Tensor&) {
  throw core::InputError(
      "this image tower gives no image tokens: CoCa needs OpenCLIP's ViT (vision_cfg.tower vit)");
}

std::shared_ptr<ImageTowerImpl> make_image_tower(const ModelSpec& spec) {
  return entry(spec.image_tower).build(spec);
}

ImageTowerCost image_tower_cost(const ModelSpec& spec, bool training) {
  return entry(spec.image_tower).cost(spec, training);
}

}  // namespace clipper::model
