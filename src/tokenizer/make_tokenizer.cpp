// make_tokenizer: the spec ("clip" | "sentencepiece:PATH" | "hf:NAME_OR_PATH") and where the
// CLIP vocabulary lives.
#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "clipper/core/error.hpp"
#include "clipper/core/paths.hpp"
#include "clipper/tokenizer/clip_vocab.hpp"
#include "clipper/tokenizer/hf_files.hpp"
#include "clipper/tokenizer/tokenizer.hpp"
#include "layout.hpp"

namespace clipper::tokenizer {
namespace {

namespace fs = std::filesystem;

}  // namespace

std::vector<std::string> clip_vocab_candidates() {
  if (const char* env = std::getenv("CLIPPER_BPE_VOCAB"); env && *env) return {env};
  std::vector<std::string> out;
  auto add = [&](const fs::path& dir) {
    const std::string p = (dir / kClipVocabFile).lexically_normal().string();
    for (const auto& q : out)
      if (q == p) return;
    out.push_back(p);
  };
  for (const auto& d : core::share_dirs()) add(fs::path(d));
  return out;
}

std::string find_clip_vocab() {
  const auto candidates = clip_vocab_candidates();
  std::string looked;
  for (const auto& c : candidates) {
    std::error_code ec;
    if (fs::is_regular_file(c, ec)) return c;
    looked += "\n  " + c;
  }
  const bool from_env = std::getenv("CLIPPER_BPE_VOCAB") && *std::getenv("CLIPPER_BPE_VOCAB");
  throw core::InputError(std::string("CLIP BPE vocabulary ") + kClipVocabFile +
                         " not found; looked in:" + looked +
                         (from_env ? "\n(set by CLIPPER_BPE_VOCAB)"
                                   : "\nRun scripts/setup.sh (it copies the file from the "
                                     "open-clip-torch package) or set CLIPPER_BPE_VOCAB"));
}

std::shared_ptr<const Tokenizer> make_tokenizer(const std::string& spec,
                                                std::int64_t context_length, TextClean clean) {
  core::require(context_length >= 1, "tokenizer '" + spec + "': context length must be >= 1, got " +
                                         std::to_string(context_length));
  if (spec == "clip") return detail::make_clip_tokenizer(find_clip_vocab(), context_length);
  const std::string sp = "sentencepiece:";
  if (spec.rfind(sp, 0) == 0) {
    const std::string path = spec.substr(sp.size());
    core::require(!path.empty(),
                  "tokenizer 'sentencepiece:' needs a model path: "
                  "sentencepiece:PATH.model");
    std::error_code ec;
    core::require(fs::is_regular_file(path, ec),
                  "tokenizer '" + spec + "': SentencePiece model " + path + " not found");
    return detail::make_sentencepiece_tokenizer(path, context_length);
  }
  if (spec.rfind("hf:", 0) == 0)
    return detail::make_hf_tokenizer(find_hf_tokenizer_dir(spec.substr(3)), context_length, clean);
  throw core::InputError("unknown tokenizer '" + spec +
                         "': expected 'clip', 'sentencepiece:PATH.model' or 'hf:NAME_OR_PATH'");
}

std::shared_ptr<const Tokenizer> make_model_tokenizer(const std::string& spec,
                                                      std::int64_t context_length,
                                                      const std::string& clean) {
  const auto how = parse_text_clean(clean);
  if (!how)
    throw core::InputError("tokenizer '" + spec + "': text_cfg.tokenizer_clean must be "
                           "whitespace, canonicalize or lower, got '" + clean + "'");
  return make_tokenizer(spec, context_length, *how);
}

}  // namespace clipper::tokenizer
