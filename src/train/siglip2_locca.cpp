#include "clipper/train/siglip2_locca.hpp"

#include <ATen/ATen.h>

#include "clipper/model/siglip2.hpp"

namespace clipper::train {

namespace {

struct TaskOut {
  at::Tensor logits, labels;
};

TaskOut run_task(model::ClipImpl& model, const at::Tensor& image_tokens, const at::Tensor& tokens,
                 const at::Tensor& start, const LoccaOptions& o) {
  auto labels = loss::locca_labels(tokens, start, o.pad_id);
  if (o.parallel && o.mask_embedding.defined())
    return {model::parallel_decoder_logits(model, image_tokens, tokens, start, o.mask_embedding),
            labels};
  const auto inputs = o.parallel ? loss::parallel_inputs(tokens, start, o.mask_id) : tokens;
  return {model::decoder_logits(model, image_tokens, inputs, /*causal=*/!o.parallel), labels};
}

}  // namespace

loss::LoccaLoss locca_decoder_loss(model::ClipImpl& model, const at::Tensor& image_tokens,
                                   const at::Tensor& captions, const RegionBatch& regions,
                                   const LoccaOptions& o) {
  loss::LoccaInputs in;
  const auto after_start = at::ones({captions.size(0)}, captions.options());
  auto cap = run_task(model, image_tokens, captions, after_start, o);
  in.caption_logits = cap.logits;
  in.caption_labels = cap.labels;
  if (!regions.empty()) {
    const auto rows = regions.rows.to(image_tokens.device());
    const auto img = image_tokens.index_select(0, rows);
    auto aref = run_task(model, img, regions.aref_tokens, regions.aref_start, o);
    auto gcap = run_task(model, img, regions.gcap_tokens, regions.gcap_start, o);
    in.aref_logits = aref.logits;
    in.aref_labels = aref.labels;
    in.gcap_logits = gcap.logits;
    in.gcap_labels = gcap.labels;
  }
  return loss::locca_loss(in, o.weights);
}

}  // namespace clipper::train
