#include "clipper/eval/embed.hpp"

#include <ATen/ATen.h>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/data/image.hpp"
#include "clipper/model/image_normalizer.hpp"
#include "clipper/tokenizer/tokenizer.hpp"

namespace clipper::eval {

at::Tensor load_images(const model::ModelSpec& spec, const std::vector<std::string>& paths,
                       at::Device device, const data::Transparency& transparency) {
  const int S = static_cast<int>(spec.image_size);
  data::TransformSpec ts;
  ts.size = S;
  ts.train = false;
  ts.transparency = transparency;
  ts.resize_mode = spec.resize_mode;  // the model's preprocess_cfg, as open_clip's preprocess
  ts.interpolation = spec.interpolation;
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
  std::vector<at::Tensor> out;
  for (std::size_t start = 0; start < paths.size(); start += static_cast<std::size_t>(batch)) {
    const std::size_t n =
        std::min<std::size_t>(static_cast<std::size_t>(batch), paths.size() - start);
    const std::vector<std::string> part(paths.begin() + static_cast<std::ptrdiff_t>(start),
                                        paths.begin() + static_cast<std::ptrdiff_t>(start + n));
    const auto x = load_images(model.spec(), part, device, transparency);
    out.push_back(model.encode_image(x, /*normalize=*/true).to(at::kFloat).cpu());
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
    out.push_back(model.encode_text(ids.to(device), /*normalize=*/true).to(at::kFloat).cpu());
  }
  return out.empty() ? at::zeros({0, model.spec().embed_dim}) : at::cat(out);
}

}  // namespace clipper::eval
