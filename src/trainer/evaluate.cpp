#include "clipper/trainer/evaluate.hpp"

#include <ATen/ATen.h>

#include <iomanip>

#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/data/loader.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/tokenizer/tokenizer.hpp"

namespace clipper::trainer {

namespace {

// The model's evaluation transform: its image size and preprocess_cfg (resize mode, filter).
std::unique_ptr<data::Loader> eval_loader(const EvalSettings& es, const std::string& shards,
                                          bool labels, const model::ModelSpec& spec,
                                          std::shared_ptr<const tokenizer::Tokenizer> tok,
                                          const dist::ProcessGroup& pg) {
  auto o = data::LoaderOptions::from_config(es.data, es.eval.batch_size,
                                            static_cast<int>(spec.image_size), pg.rank(), pg.size(),
                                            es.seed);
  o.resize_mode = spec.resize_mode;
  o.interpolation = spec.interpolation;
  o.shards = shards;
  o.source_weights.clear();
  o.num_samples = 0;
  o.resampled = false;
  o.train = false;
  o.drop_last = false;
  if (labels) o.label_key = "cls";
  return std::make_unique<data::Loader>(o, std::move(tok));
}

void add_zeroshot(const EvalSettings& es, model::ClipImpl& model,
                  std::shared_ptr<const tokenizer::Tokenizer> tok, dist::ProcessGroup& pg,
                  at::Device device, const eval::Prepare& prepare, const std::string& what,
                  EvalReport* rep) {
  if (es.eval.zeroshot_classes.empty())
    throw core::InputError("eval.zeroshot_shards is set but eval.zeroshot_classes is empty");
  const auto classes = eval::load_zeroshot_classes(es.eval.zeroshot_classes);
  auto classifier = eval::zeroshot_classifier(model, *tok, classes, device);
  auto l = eval_loader(es, es.eval.zeroshot_shards, true, model.spec(), tok, pg);
  const auto r = eval::zeroshot(model, *l, classifier, prepare, pg);
  rep->scalars.emplace_back("eval/zeroshot_top1", r.top1);
  rep->scalars.emplace_back("eval/zeroshot_top5", r.top5);
  rep->zeroshot_top1 = r.top1;
  CLIPPER_INFO(what << ": zero-shot on " << r.count << " images: top-1 " << std::fixed
                    << std::setprecision(2) << 100 * r.top1 << " %, top-5 " << 100 * r.top5
                    << " %");
}

void add_retrieval(const EvalSettings& es, model::ClipImpl& model,
                   std::shared_ptr<const tokenizer::Tokenizer> tok, dist::ProcessGroup& pg,
                   const eval::Prepare& prepare, const std::string& what, EvalReport* rep) {
  auto l = eval_loader(es, es.eval.retrieval_shards, false, model.spec(), tok, pg);
  const auto r = eval::retrieval(model, *l, prepare, pg);
  const char* names[3] = {"r1", "r5", "r10"};
  for (int i = 0; i < 3; ++i) {
    rep->scalars.emplace_back(std::string("eval/image_to_text_") + names[i], r.image_to_text[i]);
    rep->scalars.emplace_back(std::string("eval/text_to_image_") + names[i], r.text_to_image[i]);
  }
  CLIPPER_INFO(what << ": retrieval on " << r.count << " pairs: image->text R@1/5/10 " << std::fixed
                    << std::setprecision(3) << r.image_to_text[0] << "/" << r.image_to_text[1]
                    << "/" << r.image_to_text[2] << ", text->image " << r.text_to_image[0] << "/"
                    << r.text_to_image[1] << "/" << r.text_to_image[2]);
}

}  // namespace

EvalSettings EvalSettings::from(const config::Config& cfg) {
  return {cfg.eval, cfg.data, static_cast<std::uint64_t>(cfg.train.seed)};
}

EvalReport evaluate(const EvalSettings& settings, model::ClipImpl& model,
                    std::shared_ptr<const tokenizer::Tokenizer> tok, dist::ProcessGroup& pg,
                    at::Device device, const eval::Prepare& prepare, const std::string& what) {
  EvalReport rep;
  if (!settings.eval.zeroshot_shards.empty())
    add_zeroshot(settings, model, tok, pg, device, prepare, what, &rep);
  if (!settings.eval.retrieval_shards.empty())
    add_retrieval(settings, model, tok, pg, prepare, what, &rep);
  return rep;
}

}  // namespace clipper::trainer
