#include "clipper/trainer/evaluate.hpp"

#include <ATen/ATen.h>

#include <iomanip>

#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/data/loader.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/tokenizer/tokenizer.hpp"

namespace clipper::trainer {

EvalReport evaluate(const config::Config& cfg, model::ClipImpl& model,
                    std::shared_ptr<const tokenizer::Tokenizer> tok, dist::ProcessGroup& pg,
                    at::Device device, const eval::Prepare& prepare, std::int64_t step) {
  EvalReport rep;
  auto make_loader = [&](const std::string& shards, bool labels) {
    auto o = data::LoaderOptions::from_config(
        cfg.data, cfg.eval.batch_size, static_cast<int>(model.spec().image_size), pg.rank(),
        pg.size(), static_cast<std::uint64_t>(cfg.train.seed));
    o.shards = shards;
    o.source_weights.clear();
    o.num_samples = 0;
    o.resampled = false;
    o.train = false;
    o.drop_last = false;
    if (labels) o.label_key = "cls";
    return std::make_unique<data::Loader>(o, tok);
  };
  if (!cfg.eval.zeroshot_shards.empty()) {
    if (cfg.eval.zeroshot_classes.empty())
      throw core::InputError("eval.zeroshot_shards is set but eval.zeroshot_classes is empty");
    const auto classes = eval::load_zeroshot_classes(cfg.eval.zeroshot_classes);
    auto classifier = eval::zeroshot_classifier(model, *tok, classes, device);
    auto l = make_loader(cfg.eval.zeroshot_shards, true);
    const auto r = eval::zeroshot(model, *l, classifier, prepare, pg);
    rep.scalars.emplace_back("eval/zeroshot_top1", r.top1);
    rep.scalars.emplace_back("eval/zeroshot_top5", r.top5);
    rep.zeroshot_top1 = r.top1;
    CLIPPER_INFO("step " << step << ": zero-shot on " << r.count << " images: top-1 " << std::fixed
                         << std::setprecision(2) << 100 * r.top1 << " %, top-5 " << 100 * r.top5
                         << " %");
  }
  if (!cfg.eval.retrieval_shards.empty()) {
    auto l = make_loader(cfg.eval.retrieval_shards, false);
    const auto r = eval::retrieval(model, *l, prepare, pg);
    const char* names[3] = {"r1", "r5", "r10"};
    for (int i = 0; i < 3; ++i) {
      rep.scalars.emplace_back(std::string("eval/image_to_text_") + names[i], r.image_to_text[i]);
      rep.scalars.emplace_back(std::string("eval/text_to_image_") + names[i], r.text_to_image[i]);
    }
    CLIPPER_INFO("step " << step << ": retrieval on " << r.count << " pairs: image->text R@1/5/10 "
                         << std::fixed << std::setprecision(3) << r.image_to_text[0] << "/"
                         << r.image_to_text[1] << "/" << r.image_to_text[2] << ", text->image "
                         << r.text_to_image[0] << "/" << r.text_to_image[1] << "/"
                         << r.text_to_image[2]);
  }
  return rep;
}

}  // namespace clipper::trainer
