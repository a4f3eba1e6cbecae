#pragma once
// Evaluation: the zero-shot classifier (class names x templates) and image-text retrieval
// (recall@1/5/10 both ways; zero-shot classification itself runs through run_benchmark). With many
// ranks every rank evaluates its own split of the shards with no collective inside the loop, then
// the features are combined once at the end; ranks with fewer batches simply arrive earlier, so
// nothing can hang the way OpenCLIP's issue 1121 does.
#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

#include "clipper/model/clip.hpp"

namespace clipper::data {
class Loader;
}
namespace clipper::dist {
class ProcessGroup;
}
namespace clipper::tokenizer {
class Tokenizer;
}

namespace clipper::eval {

struct ZeroShotClasses {
  std::vector<std::string> classnames;
  std::vector<std::string> templates;  // "a photo of a {}."
};

// YAML with `classes:` (or `classnames:`) and `templates:` lists; errors name the file and the key.
ZeroShotClasses load_zeroshot_classes(const std::string& path);

// uint8 [B,H,W,3] -> normalized float [B,3,H,W] on `device`.
using Prepare = std::function<at::Tensor(const at::Tensor&)>;

// [classes, D]: each class's normalized mean of its normalized template embeddings.
at::Tensor zeroshot_classifier(model::ClipImpl& model, const tokenizer::Tokenizer& tok,
                               const ZeroShotClasses& classes, at::Device device);

// Every rank's rows of `local` [n_r, ...] concatenated in rank order (ranks may hold different
// counts, none at all included); `local` itself with one rank. Collective.
at::Tensor gather_rows(const at::Tensor& local, dist::ProcessGroup& pg);

struct RetrievalResult {
  std::int64_t count = 0;
  double image_to_text[3] = {0, 0, 0};  // recall@1, @5, @10
  double text_to_image[3] = {0, 0, 0};
};
RetrievalResult retrieval(model::ClipImpl& model, data::Loader& loader, const Prepare& prepare,
                          dist::ProcessGroup& pg);
// Recall@K of pairs (image i, text i) from [N, D] features, counted as OpenCLIP's
// get_clip_metrics: the true item's rank is its position in the descending sort, ties in the
// candidates' order, so a duplicate caption that ties with the true one can push it down.
RetrievalResult retrieval_recall(const at::Tensor& image_features, const at::Tensor& text_features);

}  // namespace clipper::eval
