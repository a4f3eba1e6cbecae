// SentencePiece: train from a generated caption file, load it by spec, encode, and the CLI.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/io/safetensors.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/model/model_spec.hpp"
#include "clipper/tokenizer/sentencepiece_train.hpp"
#include "clipper/tokenizer/tokenizer.hpp"
#include "test_util.hpp"

namespace {

std::string caption_file(const clipper::test::TempDir& dir) {
  const char* words[] = {"a",    "dog",   "cat",   "on",    "the", "grass", "with",   "red",
                         "blue", "small", "big",   "photo", "of",  "two",   "people", "walking",
                         "near", "river", "house", "tree",  "car", "sunny", "day",    "at"};
  std::mt19937 rng(3);
  std::string text;
  for (int i = 0; i < 400; ++i) {
    const int n = 3 + static_cast<int>(rng() % 10);
    for (int k = 0; k < n; ++k) text += std::string(k ? " " : "") + words[rng() % 24];
    text += "\n";
  }
  return dir.write("captions.txt", text);
}

// A SentencePiece model of `vocab` pieces trained on caption_file's text; returns the .model path.
std::string train_model(const clipper::test::TempDir& dir, const std::string& name,
                        const std::string& type = "unigram", int vocab = 40) {
  clipper::tokenizer::SentencePieceTrainOptions o;
  o.input = caption_file(dir);
  o.vocab_size = vocab;
  o.out_prefix = dir.file(name);
  o.model_type = type;
  const auto model = clipper::tokenizer::train_sentencepiece(o);
  EXPECT_EQ(model, o.out_prefix + ".model");
  return model;
}

TEST(SentencePiece, TrainLoadEncodeRoundTrip) {
  clipper::test::TempDir dir;
  for (const std::string type : {"unigram", "bpe"}) {
    const auto model = train_model(dir, "sp/" + type, type);
    const auto tok = clipper::tokenizer::make_tokenizer("sentencepiece:" + model, 16);
    EXPECT_EQ(tok->vocab_size(), 41);  // 40 pieces and the end id
    EXPECT_EQ(tok->context_length(), 16);
    std::vector<std::int64_t> row(16, -1);
    tok->encode("a dog on the grass", row.data());
    EXPECT_EQ(row[0], 2) << type;  // start
    std::size_t end = 1;
    while (end < row.size() && row[end] != 40) {
      EXPECT_GE(row[end], 4) << type;  // ordinary pieces (no unknowns in this text)
      EXPECT_LT(row[end], 40) << type;
      ++end;
    }
    ASSERT_LT(end, row.size()) << type << ": no end id";
    // The end id is the largest id: the text tower finds it with argmax, as with CLIP.
    EXPECT_EQ(static_cast<std::size_t>(std::max_element(row.begin(), row.end()) - row.begin()),
              end);
    EXPECT_GE(end, 3u) << type;
    for (std::size_t i = end + 1; i < row.size(); ++i) EXPECT_EQ(row[i], 0) << type;
    // The same text encodes the same way; a different one differently.
    std::vector<std::int64_t> again(16), other(16);
    tok->encode("a   dog on the   grass", again.data());  // whitespace is collapsed first
    tok->encode("two people walking near the river", other.data());
    EXPECT_EQ(again, row);
    EXPECT_NE(other, row);
    // Too long: cut, last id is the end id.
    std::string long_text;
    for (int i = 0; i < 40; ++i) long_text += "people walking ";
    tok->encode(long_text, row.data());
    EXPECT_EQ(row.front(), 2);
    EXPECT_EQ(row.back(), 40);
    for (std::size_t i = 1; i + 1 < row.size(); ++i) EXPECT_GE(row[i], 4);
  }
}

// `clipper caption` decodes a generated row with the model's tokenizer: the row's start and end
// ids, and its text back from the ids (a row as encode writes it, or as generation leaves it).
TEST(SentencePiece, GeneratedRowsDecodeToTheirCaption) {
  clipper::test::TempDir dir;
  const auto tok =
      clipper::tokenizer::make_tokenizer("sentencepiece:" + train_model(dir, "sp/bpe", "bpe"), 32);
  const auto ids = tok->row_ids();
  EXPECT_EQ(ids.start, 2);
  EXPECT_EQ(ids.end, 40);
  EXPECT_EQ(ids.pad, 0);
  std::vector<std::int64_t> row(32);
  tok->encode("two  people walking near the river ", row.data());
  EXPECT_EQ(tok->caption(row), "two people walking near the river");
  // Generation stops at the end id; what follows it is not read.
  const auto end = std::find(row.begin(), row.end(), 40);
  ASSERT_NE(end, row.end());
  std::fill(end + 1, row.end(), 7);
  EXPECT_EQ(tok->caption(row), "two people walking near the river");
  EXPECT_THROW(tok->caption({2, 41}), clipper::core::InputError);  // past the end id
}

TEST(SentencePiece, ClipRowsDecodeToTheirCaption) {
  const auto tok = clipper::tokenizer::make_tokenizer("clip", 16);
  EXPECT_EQ(tok->row_ids().start, 49406);
  EXPECT_EQ(tok->row_ids().end, 49407);
  std::vector<std::int64_t> row(16);
  tok->encode("A photo of a dog.", row.data());
  EXPECT_EQ(tok->caption(row), "a photo of a dog .");  // open_clip's decode spaces punctuation
}

TEST(SentencePiece, ConcurrentEncodingGivesTheSameIds) {
  clipper::test::TempDir dir;
  const auto tok = clipper::tokenizer::make_tokenizer("sentencepiece:" + train_model(dir, "m"), 12);
  std::vector<std::string> texts;
  std::ifstream in(dir.file("captions.txt"));
  for (std::string line; std::getline(in, line);) texts.push_back(line);
  std::vector<std::vector<std::int64_t>> expected(texts.size(), std::vector<std::int64_t>(12));
  for (std::size_t i = 0; i < texts.size(); ++i) tok->encode(texts[i], expected[i].data());
  std::vector<int> wrong(6, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t)
    threads.emplace_back([&, t] {
      std::vector<std::int64_t> row(12);
      for (std::size_t i = 0; i < texts.size(); ++i) {
        tok->encode(texts[(i + static_cast<std::size_t>(t) * 17) % texts.size()], row.data());
        if (row != expected[(i + static_cast<std::size_t>(t) * 17) % texts.size()]) ++wrong[t];
      }
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 6; ++t) EXPECT_EQ(wrong[t], 0) << "thread " << t;
}

TEST(SentencePiece, BadInputsAreReported) {
  clipper::test::TempDir dir;
  clipper::tokenizer::SentencePieceTrainOptions o;
  o.input = dir.file("missing.txt");
  o.vocab_size = 60;
  o.out_prefix = dir.file("m");
  EXPECT_THROW(clipper::tokenizer::train_sentencepiece(o), clipper::core::InputError);
  o.input = caption_file(dir);
  o.vocab_size = 100000;  // far more pieces than the text holds
  EXPECT_THROW(clipper::tokenizer::train_sentencepiece(o), clipper::core::InputError);
  const auto junk = dir.write("junk.model", "not a model");
  EXPECT_THROW(clipper::tokenizer::make_tokenizer("sentencepiece:" + junk, 77),
               clipper::core::InputError);
}

TEST(SentencePiece, CliTrainThenEncode) {
  clipper::test::TempDir dir;
  const auto input = caption_file(dir);
  const auto bin = clipper::test::clipper_bin();
  const auto train =
      clipper::test::run(bin + " tokenizer train --input " + input +
                         " --vocab-size 40 --model-type bpe --out " + dir.file("tok"));
  ASSERT_EQ(train.exit_code, 0) << train.output;
  EXPECT_NE(train.output.find(dir.file("tok.model")), std::string::npos) << train.output;
  const auto enc =
      clipper::test::run(bin + " tokenizer encode --spec sentencepiece:" + dir.file("tok.model") +
                         " --context-length 6 'a dog'");
  ASSERT_EQ(enc.exit_code, 0) << enc.output;
  EXPECT_EQ(enc.output.rfind("2 ", 0), 0u) << enc.output;
  EXPECT_NE(enc.output.find(" 40"), std::string::npos) << enc.output;  // end id: 40 pieces
  const auto bad = clipper::test::run(bin + " tokenizer train --input " + input +
                                      " --vocab-size 50 --model-type wordpiece --out x");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
}

// `export --format hf` of a model with a SentencePiece tokenizer: config.json's pad / bos / eos
// ids are the tokenizer's, not those guessed from the vocabulary size (32,000: T5's eos = pad =
// 1, no bos).
TEST(SentencePiece, HfExportWritesTheTokenizersSpecialIds) {
  clipper::test::TempDir dir;
  const auto sp = train_model(dir, "sp/bpe", "bpe");
  auto text =
      clipper::core::read_file(clipper::test::source_path("configs/models/tiny-siglip.yaml"));
  for (const auto& [from, to] :
       {std::pair<std::string, std::string>{"vocab_size: 49408", "vocab_size: 32000"},
        {"tokenizer: clip", "tokenizer: sentencepiece:" + sp}}) {
    ASSERT_NE(text.find(from), std::string::npos) << from;
    text.replace(text.find(from), from.size(), to);
  }
  const auto yaml = dir.write("sp-siglip.yaml", text);
  const auto spec = clipper::model::load_model_spec(yaml);
  clipper::io::save_safetensors(
      dir.file("w.safetensors"),
      clipper::io::model_state_dict(*clipper::model::create_model(spec, 1)));
  const auto r =
      clipper::test::run(clipper::test::clipper_bin() + " export " + dir.file("w.safetensors") +
                         " --model " + yaml + " --format hf --out " + dir.file("hf"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto ids = clipper::tokenizer::make_tokenizer("sentencepiece:" + sp, 16)->row_ids();
  ASSERT_NE(ids.end, 1);  // not the guessed T5 id
  const auto cfg = nlohmann::json::parse(clipper::core::read_file(dir.file("hf/config.json")));
  EXPECT_EQ(cfg["text_config"]["eos_token_id"], ids.end) << cfg["text_config"].dump();
  EXPECT_EQ(cfg["text_config"]["bos_token_id"], ids.start) << cfg["text_config"].dump();
  EXPECT_EQ(cfg["text_config"]["pad_token_id"], ids.pad) << cfg["text_config"].dump();
}

}  // namespace
