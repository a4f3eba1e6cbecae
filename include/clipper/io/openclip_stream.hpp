#pragma once
// export_openclip (openclip.hpp), streamed: the model's state dict is read one tensor at a time
// (LoRA adapters merged into their weight as it is read) and each written before the next is
// read, so the export holds one tensor beside the model. A model whose parameters are sharded
// (dist.zero 3) is exported inside TrainStep::read_parameters: reading a tensor gathers its unit,
// and no moment has the whole model gathered, let alone two copies of it.
#include <string>

#include "clipper/model/clip.hpp"
#include "clipper/model/model_spec.hpp"

namespace clipper::io {

// The files of export_openclip (the same bytes) in `out_dir` when `write`; without it the tensors
// are read all the same (a rank that takes part in the gathers of another that writes). A failed
// write still reads every tensor, then throws.
void export_openclip_streamed(const model::ClipImpl& model, const model::ModelSpec& spec,
                              const std::string& out_dir, bool write);

}  // namespace clipper::io
