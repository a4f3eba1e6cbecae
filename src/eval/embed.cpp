#include "clipper/eval/embed.hpp"
#include "clipper/eval/precision.hpp"

#include <ATen/ATen.h>

#include <algorithm>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/data/image.hpp"
#include "clipper/model/image_normalizer.hpp"
#include "clipper/tokenizer/tokenizer.hpp"

namespace clipper::eval {

namespace {

// The model's preprocess_cfg as open_clip's preprocess applies it (NaFlex: patches under the
// budget).
data::TransformSpec eval_transform(const model::ModelSpec& spec,
                                   const data::Transparency& transparency) {
  data::TransformSpec ts;
  ts.size = static_cast<int>(spec.image_size);
  ts.train = false;
  ts.transparency = transparency;
  ts.resize_mode = spec.resize_mode;
  ts.interpolation = spec.interpolation;
  ts.naflex_patch = spec.naflex_inputs() ? static_cast<int>(spec.patch_size) : 0;
  ts.naflex_max_tokens = spec.max_seq_len;
  return ts;
}

// paths[begin, end) decoded as the eval transform makes them: uint8 pictures [n, S, S, 3], or for a
// NaFlex model patches [n, max_seq_len, P*P*3] with each picture's grid [n, 2].
struct DecodedImages {
  at::Tensor pixels, grids;
};

DecodedImages decode_images(data::ImageProcessor& proc, const data::TransformSpec& ts,
                            const std::vector<std::string>& paths, std::size_t begin,
                            std::size_t end) {
  const auto count = static_cast<std::int64_t>(end - begin);
  DecodedImages d;
  if (ts.naflex()) {
    d.pixels = at::empty(
        {count, ts.naflex_max_tokens, std::int64_t{ts.naflex_patch} * ts.naflex_patch * 3},
        at::kByte);
    d.grids = at::empty({count, 2}, at::kLong);
  } else {
    d.pixels = at::empty({count, ts.size, ts.size, 3}, at::kByte);
  }
  for (std::size_t i = begin; i < end; ++i) {
    const auto row = static_cast<std::int64_t>(i - begin);
    std::string why;
    data::PatchGrid g;
    const auto err = proc.process(core::read_file(paths[i]), 0,
                                  d.pixels[row].data_ptr<std::uint8_t>(), &why, &g);
    if (err != data::ImageError::none)
      throw core::InputError("image '" + paths[i] + "' cannot be used: " + why);
    if (d.grids.defined()) {
      d.grids.data_ptr<std::int64_t>()[2 * row] = g.rows;
      d.grids.data_ptr<std::int64_t>()[2 * row + 1] = g.cols;
    }
  }
  return d;
}

}  // namespace

at::Tensor load_images(const model::ModelSpec& spec, const std::vector<std::string>& paths,
                       at::Device device, const data::Transparency& transparency) {
  core::require(!spec.naflex_inputs(),
                "load_images: a NaFlex model takes patches with their "
                "grids (embed_images), not square pictures");
  const data::TransformSpec ts = eval_transform(spec, transparency);
  data::ImageProcessor proc(ts, 89478485);
  const model::ImageNormalizer normalize(spec, device);
  return normalize(decode_images(proc, ts, paths, 0, paths.size()).pixels);
}

at::Tensor embed_images(model::ClipImpl& model, const std::vector<std::string>& paths,
                        std::int64_t batch, at::Device device,
                        const data::Transparency& transparency) {
  at::NoGradGuard no_grad;
  model.eval();
  const data::TransformSpec ts = eval_transform(model.spec(), transparency);
  data::ImageProcessor proc(ts, 89478485);
  const model::ImageNormalizer normalize(model.spec(), device);
  std::vector<at::Tensor> out;
  for (std::size_t start = 0; start < paths.size(); start += static_cast<std::size_t>(batch)) {
    const auto end = std::min(paths.size(), start + static_cast<std::size_t>(batch));
    const auto d = decode_images(proc, ts, paths, start, end);
    const auto x = normalize(d.pixels);
    const auto grids = d.grids.defined() ? d.grids.to(x.device()) : at::Tensor();
    const TowerAutocast autocast;
    out.push_back(model.encode_image(x, grids, /*normalize=*/true).to(at::kFloat).cpu());
  }
  return out.empty() ? at::zeros({0, model.spec().embed_dim}) : at::cat(out);
}

at::Tensor embed_texts(model::ClipImpl& model, const tokenizer::Tokenizer& tok,
                       const std::vector<std::string>& texts, std::int64_t batch,
                       at::Device device) {
  at::NoGradGuard no_grad;
  model.eval();
  std::vector<at::Tensor> out;
  for (std::size_t start = 0; start < texts.size(); start += static_cast<std::size_t>(batch)) {
    const std::size_t n =
        std::min<std::size_t>(static_cast<std::size_t>(batch), texts.size() - start);
    auto ids = at::zeros({static_cast<std::int64_t>(n), tok.context_length()}, at::kLong);
    for (std::size_t i = 0; i < n; ++i)
      tok.encode(texts[start + i], ids[static_cast<std::int64_t>(i)].data_ptr<std::int64_t>());
    const TowerAutocast autocast;
    out.push_back(model.encode_text(ids.to(device), /*normalize=*/true).to(at::kFloat).cpu());
  }
  return out.empty() ? at::zeros({0, model.spec().embed_dim}) : at::cat(out);
}

}  // namespace clipper::eval
