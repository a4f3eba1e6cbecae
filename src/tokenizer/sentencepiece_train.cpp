#include "clipper/tokenizer/sentencepiece_train.hpp"

#include <sentencepiece_trainer.h>

#include <filesystem>
#include <fstream>
#include <unordered_map>

#include "clip_clean_steps.hpp"
#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "utf8.hpp"

namespace clipper::tokenizer {
namespace {

// Feeds the trainer cleaned, non-empty lines of the caption file.
class CaptionLines final : public sentencepiece::SentenceIterator {
 public:
  CaptionLines(const std::string& path, std::int64_t max_lines)
      : in_(path, std::ios::binary), max_lines_(max_lines) {
    Next();
  }
  bool done() const override { return done_; }
  void Next() override {
    std::string line;
    while (!(max_lines_ > 0 && read_ >= max_lines_) && std::getline(in_, line)) {
      value_ = clean_caption(line);
      if (value_.empty()) continue;
      ++read_;
      return;
    }
    done_ = true;
  }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return {}; }
  std::int64_t lines() const { return read_; }

 private:
  std::ifstream in_;
  std::int64_t max_lines_;
  std::int64_t read_ = 0;
  std::string value_;
  bool done_ = false;
};

}  // namespace

std::string clean_caption(std::string_view text) {
  using namespace detail;
  std::u32string t = ftfy_fix_text(utf8_to_u32(text));
  return u32_to_utf8(whitespace_clean(html_unescape(html_unescape(t))));
}

std::string train_sentencepiece(const SentencePieceTrainOptions& o) {
  core::require(std::filesystem::is_regular_file(o.input),
                "tokenizer train: --input " + o.input + " is not a readable file");
  core::require(o.vocab_size >= 8, "tokenizer train: --vocab-size must be at least 8, got " +
                                       std::to_string(o.vocab_size));
  core::require(o.model_type == "unigram" || o.model_type == "bpe",
                "tokenizer train: --model-type must be unigram or bpe, got '" + o.model_type + "'");
  core::require(!o.out_prefix.empty(), "tokenizer train: --out PREFIX is required");
  const auto parent = std::filesystem::path(o.out_prefix).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);

  const std::unordered_map<std::string, std::string> args = {
      {"model_prefix", o.out_prefix},
      {"vocab_size", std::to_string(o.vocab_size)},
      {"model_type", o.model_type},
      {"character_coverage", std::to_string(o.character_coverage)},
      {"input_sentence_size", std::to_string(o.max_sentences)},
      {"shuffle_input_sentence", "true"},
      {"pad_id", "0"},
      {"unk_id", "1"},
      {"bos_id", "2"},
      {"eos_id", "3"},
      {"minloglevel", "1"},
  };
  CaptionLines lines(o.input, o.max_sentences);
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &lines);
  if (!status.ok())
    throw core::InputError("tokenizer train on " + o.input +
                           ": SentencePiece says: " + status.ToString());
  CLIPPER_INFO("trained a " << o.model_type << " SentencePiece model of " << o.vocab_size
                            << " pieces on " << lines.lines() << " captions: " << o.out_prefix
                            << ".model");
  return o.out_prefix + ".model";
}

}  // namespace clipper::tokenizer
