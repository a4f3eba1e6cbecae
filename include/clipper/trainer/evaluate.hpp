#pragma once
// The evaluations a config asks for (eval.zeroshot_shards, eval.retrieval_shards, eval.suite),
// shared by `clipper train` (every eval.every_steps and at the end) and `clipper eval`.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "clipper/config/config.hpp"
#include "clipper/eval/eval.hpp"
#include "clipper/model/clip.hpp"

namespace clipper::trainer {

struct EvalReport {
  std::vector<std::pair<std::string, double>> scalars;  // "eval/zeroshot_top1", ...
  double zeroshot_top1 = -1;                            // -1: not evaluated
};

// What evaluation reads from the config: its own section, and the data section for how samples
// are read (image and text keys, pixel limit, transparency); the seed names the loaders' streams.
struct EvalSettings {
  const config::EvalConfig& eval;
  const config::DataConfig& data;
  std::uint64_t seed = 0;
  // The run's bf16 autocast (session::Session::bf16): evaluation runs the towers under it too,
  // as the run trains (open_clip's and CLIP_benchmark's --amp); features and metrics in fp32.
  bool bf16 = false;
  static EvalSettings from(const config::Config& cfg);
};

// Collective when pg has several ranks (every rank calls it). `what` names the weights in the
// log lines: "step 120" in training, "export runs/x/export" for `clipper eval`.
EvalReport evaluate(const EvalSettings& settings, model::ClipImpl& model,
                    std::shared_ptr<const tokenizer::Tokenizer> tok, dist::ProcessGroup& pg,
                    at::Device device, const eval::Prepare& prepare, const std::string& what);

// Opens every folder of eval.suite (its metadata): an InputError naming the folder, before a
// run starts, instead of at its first evaluation.
void check_suite(const config::EvalConfig& eval);

}  // namespace clipper::trainer
