#include "clipper/eval/eval.hpp"
#include "clipper/eval/precision.hpp"

#include <ATen/ATen.h>
#include <yaml-cpp/yaml.h>

#include "clipper/core/error.hpp"
#include "clipper/core/progress.hpp"
#include "clipper/data/loader.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/eval/benchmark_dataset.hpp"
#include "clipper/tokenizer/tokenizer.hpp"

namespace clipper::eval {
namespace {

std::vector<std::string> string_list(const YAML::Node& root, const char* key,
                                     const std::string& path) {
  const YAML::Node n = root[key];
  if (!n || !n.IsSequence() || n.size() == 0)
    throw core::InputError(path + ": '" + key + "' must be a non-empty list of strings");
  std::vector<std::string> out;
  for (const auto& item : n) {
    if (!item.IsScalar())
      throw core::InputError(path + ": every entry of '" + key + "' must be a string");
    out.push_back(item.Scalar());
  }
  return out;
}

at::Tensor tokenize(const tokenizer::Tokenizer& tok, const std::vector<std::string>& texts) {
  auto ids = at::zeros({static_cast<std::int64_t>(texts.size()), tok.context_length()}, at::kLong);
  for (std::size_t i = 0; i < texts.size(); ++i)
    tok.encode(texts[i], ids[static_cast<std::int64_t>(i)].data_ptr<std::int64_t>());
  return ids;
}

}  // namespace

ZeroShotClasses load_zeroshot_classes(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    throw core::InputError("cannot read zero-shot classes '" + path + "': " + e.what());
  }
  // `classes` as `clipper shards --classes` reads it; `classnames` as OpenCLIP names it.
  return {string_list(root, root["classes"] ? "classes" : "classnames", path),
          string_list(root, "templates", path)};
}

at::Tensor zeroshot_classifier(model::ClipImpl& model, const tokenizer::Tokenizer& tok,
                               const ZeroShotClasses& classes, at::Device device) {
  at::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  std::vector<at::Tensor> rows;
  for (const auto& name : classes.classnames) {
    std::vector<std::string> texts;
    for (const auto& t : classes.templates) texts.push_back(fill_template(t, name));
    const TowerAutocast autocast;  // the mean below is fp32 (its input is)
    auto f = model.encode_text(tokenize(tok, texts).to(device), /*normalize=*/true).to(at::kFloat);
    auto mean = f.mean(0);
    rows.push_back(mean / mean.norm());
  }
  model.train(was_training);
  return at::stack(rows);
}

at::Tensor gather_rows(const at::Tensor& local, dist::ProcessGroup& pg) {
  if (pg.size() == 1) return local;
  const std::int64_t n = local.size(0);
  const std::int64_t max_n = pg.all_reduce_max_int(n);
  if (max_n == 0) return local;
  auto shape = local.sizes().vec();
  shape[0] = max_n;
  auto padded = at::zeros(shape, local.options());
  padded.narrow(0, 0, n).copy_(local);
  auto counts =
      pg.all_gather(at::full({1}, n, at::TensorOptions().dtype(at::kLong).device(pg.device())),
                    "eval counts")
          .cpu();
  auto all = pg.all_gather(padded.to(pg.device()), "eval features").to(local.device());
  std::vector<at::Tensor> parts;
  for (int r = 0; r < pg.size(); ++r)
    parts.push_back(all.narrow(0, r * max_n, counts[r].item<std::int64_t>()));
  return at::cat(parts);
}

RetrievalResult retrieval(model::ClipImpl& model, data::Loader& loader, const Prepare& prepare,
                          dist::ProcessGroup& pg) {
  at::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  std::vector<at::Tensor> img, txt;
  core::Progress progress("eval retrieval", loader.samples_per_epoch(), "samples");
  std::int64_t seen = 0;
  while (auto b = loader.next()) {
    progress.update(seen += b->images.size(0));
    auto images = prepare(b->images);
    const auto grids = b->grids.defined() ? b->grids.to(images.device()) : at::Tensor();
    const TowerAutocast autocast;
    img.push_back(model.encode_image(images, grids, true).to(at::kFloat).cpu());
    txt.push_back(model.encode_text(b->tokens.to(images.device()), true).to(at::kFloat).cpu());
  }
  model.train(was_training);
  const std::int64_t dim = model.spec().embed_dim;
  auto I = gather_rows(img.empty() ? at::zeros({0, dim}) : at::cat(img), pg);
  auto T = gather_rows(txt.empty() ? at::zeros({0, dim}) : at::cat(txt), pg);
  return retrieval_recall(I, T);
}

RetrievalResult retrieval_recall(const at::Tensor& image_features,
                                 const at::Tensor& text_features) {
  RetrievalResult r;
  r.count = image_features.size(0);
  if (r.count == 0) return r;
  const auto sim = image_features.matmul(text_features.t());  // [N, N]; pair i: image i, text i
  const auto truth = at::arange(r.count, at::kLong).unsqueeze(1);
  const std::int64_t ks[3] = {1, 5, 10};
  // The true item's position in the descending sort of its row, as OpenCLIP's get_clip_metrics
  // takes it from argsort: the candidates that score higher, plus those that tie with it and come
  // before it (a stable sort's order). A tie (a duplicate caption) is not counted in the model's
  // favour.
  auto rank_of_truth = [&](const at::Tensor& s) {
    const auto true_score = s.gather(1, truth);
    const auto before = at::arange(r.count, at::kLong).unsqueeze(0).lt(truth);
    return s.gt(true_score).sum(1) + s.eq(true_score).logical_and(before).sum(1);
  };
  const auto ri = rank_of_truth(sim), rt = rank_of_truth(sim.t());
  for (int i = 0; i < 3; ++i) {
    r.image_to_text[i] = ri.lt(ks[i]).to(at::kDouble).mean().item<double>();
    r.text_to_image[i] = rt.lt(ks[i]).to(at::kDouble).mean().item<double>();
  }
  return r;
}

}  // namespace clipper::eval
