// clipper tokenizer train --input FILE --vocab-size N --out PREFIX [--model-type unigram|bpe]
// clipper tokenizer encode [--spec clip | sentencepiece:PATH | hf:NAME_OR_PATH] [--context-length
// 77]
//                          [--clean whitespace|canonicalize|lower] (TEXT... | --file FILE)
//                          [--stats]
#include <chrono>
#include <fstream>
#include <iostream>
#include <memory>
#include <vector>

#include "clipper/core/error.hpp"
#include "clipper/tokenizer/sentencepiece_train.hpp"
#include "clipper/tokenizer/tokenizer.hpp"
#include "verbs.hpp"

namespace clipper::cli {

namespace {

struct EncodeArgs {
  std::string spec = "clip";
  std::int64_t context_length = 77;
  std::string clean = "whitespace";
  std::vector<std::string> texts;
  std::string file;
  bool stats = false;
};

int run_encode(const EncodeArgs& a) {
  core::require(a.texts.empty() != a.file.empty(),
                "tokenizer encode: give TEXT arguments or --file FILE (one caption per line)");
  std::vector<std::string> texts = a.texts;
  if (!a.file.empty()) {
    std::ifstream in(a.file, std::ios::binary);
    core::require(static_cast<bool>(in), "tokenizer encode: cannot read --file " + a.file);
    for (std::string line; std::getline(in, line);) texts.push_back(line);
  }
  const auto clean = tokenizer::parse_text_clean(a.clean);
  core::require(clean.has_value(), "tokenizer encode: --clean '" + a.clean +
                                       "' is not one of whitespace, canonicalize, lower");
  const auto tok = tokenizer::make_tokenizer(a.spec, a.context_length, *clean);
  std::vector<std::int64_t> row(static_cast<std::size_t>(a.context_length));
  const auto start = std::chrono::steady_clock::now();
  std::string out;
  for (const auto& t : texts) {
    tok->encode(t, row.data());
    if (a.stats) continue;
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (i) out += ' ';
      out += std::to_string(row[i]);
    }
    out += '\n';
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << out;
  if (a.stats)
    std::cout << texts.size() << " captions in " << secs
              << " s: " << (secs > 0 ? static_cast<double>(texts.size()) / secs : 0.0)
              << " captions/s (one thread, spec " << a.spec << ")\n";
  return 0;
}

void setup_tokenizer_verb(CLI::App& app, Action* action) {
  auto* verb = app.add_subcommand("tokenizer", "Train a SentencePiece model or encode captions");
  verb->require_subcommand(1);
  auto train = std::make_shared<tokenizer::SentencePieceTrainOptions>();
  auto* t = verb->add_subcommand("train", "Train a SentencePiece model from a caption file");
  t->add_option("--input", train->input, "caption file, one caption per line")->required();
  t->add_option("--vocab-size", train->vocab_size, "pieces in the model")->required();
  t->add_option("--out", train->out_prefix, "output prefix: writes PREFIX.model, PREFIX.vocab")
      ->required();
  t->add_option("--model-type", train->model_type, "unigram or bpe")
      ->check(CLI::IsMember({"unigram", "bpe"}));
  t->add_option("--character-coverage", train->character_coverage,
                "share of characters the model covers");
  t->add_option("--max-sentences", train->max_sentences, "sample this many lines (0: all)");
  t->callback([train, action] {
    *action = [train] {
      std::cout << tokenizer::train_sentencepiece(*train) << "\n";
      return 0;
    };
  });

  auto enc = std::make_shared<EncodeArgs>();
  auto* e = verb->add_subcommand("encode", "Print the token ids of captions, one row per caption");
  e->add_option("--spec", enc->spec, "clip, sentencepiece:PATH.model or hf:NAME_OR_PATH");
  e->add_option("--clean", enc->clean,
                "hf: tokenizers' text cleaning (open_clip's HFTokenizer clean): whitespace, "
                "canonicalize (SigLIP's configs) or lower");
  e->add_option("--context-length", enc->context_length, "ids per row");
  e->add_option("--file", enc->file, "caption file, one caption per line");
  e->add_flag("--stats", enc->stats, "print only the captions/s on one thread");
  e->add_option("texts", enc->texts, "captions");
  e->callback([enc, action] { *action = [enc] { return run_encode(*enc); }; });
}

}  // namespace

CLIPPER_REGISTER_VERB(tokenizer, setup_tokenizer_verb);

}  // namespace clipper::cli
