#include "clipper/eval/embed.hpp"
#include "clipper/eval/precision.hpp"

#include <ATen/ATen.h>

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

}  // namespace

at::Tensor load_images(const model::ModelSpec& spec, const std::vector<std::string>& paths,
                       at::Device device, const data::Transparency& transparency) {
  core::require(!spec.naflex_inputs(),
                "load_images: a NaFlex model takes patches with their "
                "grids (embed_images), not square pictures");
  const int S = static_cast<int>(spec.image_size);
  const data::TransformSpec ts = eval_transform(spec, transparency);
  data::ImageProcessor proc(ts, 89478485);
  const model::ImageNormalizer normalize(spec, device);
  auto pixels = at::empty({static_cast<std::int64_t>(paths.size()), S, S, 3}, at::kByte);
  for (std::size_t i = 0; i < paths.size(); ++i) {
    const std::string& p = paths[i];
    std::string why;
    const auto err = proc.process(
        core::read_file(p), 0, pixels[static_cast<std::int64_t>(i)].data_ptr<std::uint8_t>(), &why);
    if (err != data::ImageError::none)
      throw core::InputError("image '" + p + "' cannot be used: " + why);
  }
  return normalize(pixels);
}

at::Tensor embed_images(model::ClipImpl& model, const std::vector<std::string>& paths,
                        std::int64_t batch, at::Device device,
                        const data::Transparency& transparency) {
  at::NoGradGuard no_grad;
  model.eval();
  const auto& spec = model.spec();
  const int S = static_cast<int>(spec.image_size);
  const data::TransformSpec ts = eval_transform(spec, transparency);
  data::ImageProcessor proc(ts, 89478485);
  const model::ImageNormalizer normalize(spec, device);
  std::vector<at::Tensor> out;
  for (std::size_t start = 0; start < paths.size(); start += static_cast<std::size_t>(batch)) {
    const std::size_t n =
        std::min<std::size_t>(static_cast<std::size_t>(batch), paths.size() - start);
    const auto count = static_cast<std::int64_t>(n);
    auto pixels = ts.naflex() ? at::empty({count, ts.naflex_max_tokens,
                                           std::int64_t{ts.naflex_patch} * ts.naflex_patch * 3},
                                          at::kByte)
                              : at::empty({count, S, S, 3}, at::kByte);
    at::Tensor grids;
    if (ts.naflex()) grids = at::empty({count, 2}, at::kLong);
    for (std::size_t i = 0; i < n; ++i) {
      const std::string& p = paths[start + i];
      std::string why;
      data::PatchGrid g;
      const auto err =
          proc.process(core::read_file(p), 0,
                       pixels[static_cast<std::int64_t>(i)].data_ptr<std::uint8_t>(), &why, &g);
      if (err != data::ImageError::none)
        throw core::InputError("image '" + p + "' cannot be used: " + why);
      if (grids.defined()) {
        grids.data_ptr<std::int64_t>()[2 * i] = g.rows;
        grids.data_ptr<std::int64_t>()[2 * i + 1] = g.cols;
      }
    }
    const auto x = normalize(pixels);
    const auto gd = grids.defined() ? grids.to(x.device()) : at::Tensor();
    const TowerAutocast autocast;
    out.push_back(model.encode_image(x, gd, /*normalize=*/true).to(at::kFloat).cpu());
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
