#pragma once
// Normalized embeddings of image files or caption lines (`clipper embed`).
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "clipper/data/image.hpp"
#include "clipper/model/clip.hpp"

namespace clipper::tokenizer {
class Tokenizer;
}

namespace clipper::eval {

// Decodes each file with the evaluation transform (resize shorter side + center crop), normalizes
// with the model's mean/std and encodes: float32 [N, embed_dim], L2-normalized. Transparent pixels
// follow `transparency`, as in the shard writer and the loader.
// The files decoded with that transform and normalized: float [N, 3, S, S] on `device` (what
// embed_images encodes, and `clipper caption` captions).
at::Tensor load_images(const model::ModelSpec& spec, const std::vector<std::string>& paths,
                       at::Device device, const data::Transparency& transparency = {});
at::Tensor embed_images(model::ClipImpl& model, const std::vector<std::string>& paths,
                        std::int64_t batch, at::Device device,
                        const data::Transparency& transparency = {});
at::Tensor embed_texts(model::ClipImpl& model, const tokenizer::Tokenizer& tok,
                       const std::vector<std::string>& texts, std::int64_t batch,
                       at::Device device);

}  // namespace clipper::eval
