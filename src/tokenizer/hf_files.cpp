#include "clipper/tokenizer/hf_files.hpp"

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "clipper/core/atomic_file.hpp"
#include "clipper/tokenizer/clip_vocab.hpp"

namespace clipper::tokenizer {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

constexpr const char* kBos = "<|startoftext|>";
constexpr const char* kEos = "<|endoftext|>";

std::string vocab_json(const tokenizer::ClipVocabulary& v) {
  // open_clip's dict(zip(vocab, ids)): a string listed twice keeps its last id.
  std::map<std::string, std::size_t> last;
  for (std::size_t i = 0; i < v.tokens.size(); ++i) last[v.tokens[i]] = i;
  json out = json::object();
  for (std::size_t i = 0; i < v.tokens.size(); ++i) {
    if (last[v.tokens[i]] != i) continue;
    const std::string& t = v.tokens[i];
    // transformers spells the special tokens as OpenAI's release does.
    out[t == "<start_of_text>" ? kBos : t == "<end_of_text>" ? kEos : t] = i;
  }
  return out.dump() + "\n";
}

std::string merges_txt(const tokenizer::ClipVocabulary& v) {
  // transformers skips the first line (a version header), as open_clip does.
  std::string out = "#version: 0.2\n";
  for (const auto& [a, b] : v.merges) out += a + " " + b + "\n";
  return out;
}

}  // namespace

void write_hf_clip_tokenizer(const std::string& out_dir, std::int64_t context_length) {
  const fs::path dir(out_dir);
  const auto vocab = tokenizer::read_clip_vocabulary(tokenizer::find_clip_vocab());
  core::write_file_atomic((dir / "vocab.json").string(), vocab_json(vocab));
  core::write_file_atomic((dir / "merges.txt").string(), merges_txt(vocab));
  json special = {
      {"bos_token", kBos}, {"eos_token", kEos}, {"unk_token", kEos}, {"pad_token", kEos}};
  core::write_file_atomic((dir / "special_tokens_map.json").string(), special.dump(2) + "\n");
  json cfg = special;
  cfg["tokenizer_class"] = "CLIPTokenizer";
  cfg["model_max_length"] = context_length;
  cfg["do_lower_case"] = true;
  cfg["clean_up_tokenization_spaces"] = false;
  core::write_file_atomic((dir / "tokenizer_config.json").string(), cfg.dump(2) + "\n");
}

}  // namespace clipper::tokenizer
