#pragma once
// The counting pieces the towers' cost functions share (flops.cpp), private to src/model.
#include <cstdint>

#include "clipper/model/image_tower.hpp"

namespace clipper::model {

// One pre-norm attention block over `tokens` tokens of width d with an MLP of `mlp` units
// (causal or not: SDPA computes the full score matrix either way on the math path; OpenCLIP's
// profile counts it whole).
double block_flops(double tokens, double d, double mlp);
// The same block computed for one query token (keys and values over all `tokens`).
double pooled_block_flops(double tokens, double d, double mlp);
// Its parameters: two LayerNorms, qkv and out projections with biases, the MLP.
std::int64_t block_params(std::int64_t d, std::int64_t mlp);

ImageTowerCost openclip_vit_cost(const ModelSpec& spec, bool training);
ImageTowerCost resnet_cost(const ModelSpec& spec, bool training);

}  // namespace clipper::model
