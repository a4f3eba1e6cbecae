#pragma once
// A dist.zero 3 checkpoint folder keeps the trainable parameters (and their weight average) as
// each rank's flat shards (optim/sharded_adamw.hpp's form): tensors "<part>/<key>.<bucket>" in
// rank_<R>.safetensors, the layout in rank_<R>.json's "<part>" entry. model.json lists the
// parameters saved so ("sharded_parameters", "sharded_shapes"), ema.json their averages. These
// assemble them whole, offline, from any world size (clipper export, eval, embed, init_from).
#include <cstdint>
#include <string>
#include <vector>

#include "clipper/io/safetensors.hpp"

namespace clipper::io::detail {

// Whole tensors names[i] of shape shapes[i] from part `part`'s shards (key `key`) in `dir`.
TensorList assemble_rank_shards(const std::string& dir, const std::string& part,
                                const std::string& key, const std::vector<std::string>& names,
                                const std::vector<std::vector<std::int64_t>>& shapes);

// `dir` is a checkpoint folder whose model.json lists sharded parameters (its model.safetensors
// holds the rest, and is not written when there is no rest).
bool is_sharded_checkpoint(const std::string& dir);

// `model_file` is a checkpoint's model.safetensors (already read into `tensors`): when its
// model.json lists sharded parameters, they are assembled and appended.
void add_sharded_parameters(TensorList& tensors, const std::string& model_file);

// The averages of the sharded parameters that `dir`'s ema.json lists (none: nothing), shaped as
// those tensors of `weights` (the checkpoint's model state dict).
TensorList sharded_averages(const std::string& dir, const TensorList& weights);

}  // namespace clipper::io::detail
