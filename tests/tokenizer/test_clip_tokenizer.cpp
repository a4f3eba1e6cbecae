// The "clip" tokenizer: known ids (taken from open_clip 3.3.0 for a few short strings; the
// interop suite checks >= 1,000 captions against open_clip itself), truncation, padding,
// concurrency, the vocabulary search and the CLI.
#include <gtest/gtest.h>

#include <cstdlib>
#include <thread>
#include <vector>

#include "caption_corpus.hpp"
#include "clipper/core/error.hpp"
#include "clipper/tokenizer/clip_vocab.hpp"
#include "clipper/tokenizer/tokenizer.hpp"
#include "test_util.hpp"

namespace {

using clipper::tokenizer::make_tokenizer;

std::vector<std::int64_t> encode(const clipper::tokenizer::Tokenizer& t, const std::string& s) {
  std::vector<std::int64_t> row(static_cast<std::size_t>(t.context_length()), -1);
  t.encode(s, row.data());
  return row;
}

// The ids up to and including the end id.
std::vector<std::int64_t> ids(const clipper::tokenizer::Tokenizer& t, const std::string& s) {
  auto row = encode(t, s);
  std::size_t n = row.size();
  while (n > 0 && row[n - 1] == 0) --n;
  row.resize(n);
  return row;
}

std::shared_ptr<const clipper::tokenizer::Tokenizer> clip(std::int64_t length = 77) {
  static auto t77 = make_tokenizer("clip", 77);
  return length == 77 ? t77 : make_tokenizer("clip", length);
}

using Ids = std::vector<std::int64_t>;

TEST(ClipTokenizer, VocabularyAndContext) {
  EXPECT_EQ(clip()->vocab_size(), 49408);
  EXPECT_EQ(clip()->context_length(), 77);
}

TEST(ClipTokenizer, KnownEncodings) {
  const auto t = clip();
  EXPECT_EQ(ids(*t, "a photo of a cat"), (Ids{49406, 320, 1125, 539, 320, 2368, 49407}));
  EXPECT_EQ(ids(*t, "Hello, World!"), (Ids{49406, 3306, 267, 1002, 256, 49407}));
  EXPECT_EQ(ids(*t, "it's 42 dogs'"), (Ids{49406, 585, 568, 275, 273, 3255, 262, 49407}));
  EXPECT_EQ(ids(*t, ""), (Ids{49406, 49407}));
  EXPECT_EQ(ids(*t,
                "\xc3\x87"
                "a va? Tr\xc3\xa8s bien &amp; vous"),
            (Ids{49406, 22711, 1892, 286, 635, 41210, 25742, 261, 10636, 49407}));
  EXPECT_EQ(ids(*t, "\u6771\u4eac\u30bf\u30ef\u30fc"),
            (Ids{49406, 48338, 21078, 105, 34941, 2429, 107, 30391, 49407}));
  EXPECT_EQ(ids(*t, "  multiple   spaces\n\tand\ttabs "),
            (Ids{49406, 6470, 9006, 537, 29163, 49407}));
  EXPECT_EQ(ids(*t, "<start_of_text>x<END_OF_TEXT>"), (Ids{49406, 49406, 343, 49407, 49407}));
  EXPECT_EQ(ids(*t, "\ufb01ne \u201cquotes\u201d \uff2c\uff2f\uff35\uff24"),
            (Ids{49406, 3797, 257, 5808, 257, 7464, 49407}));
}

TEST(ClipTokenizer, TruncatesWithEndIdLast) {
  const auto t5 = clip(5);
  EXPECT_EQ(encode(*t5, "one two three four five six seven"), (Ids{49406, 637, 1237, 2097, 49407}));
  EXPECT_EQ(encode(*t5, "one two"), (Ids{49406, 637, 1237, 49407, 0}));
  EXPECT_EQ(encode(*clip(1), "one two"), (Ids{49407}));
  // Exactly context - 2 tokens fit without a cut; one more is cut.
  EXPECT_EQ(encode(*t5, "one two three"), (Ids{49406, 637, 1237, 2097, 49407}));
  EXPECT_EQ(encode(*t5, "one two three four"), (Ids{49406, 637, 1237, 2097, 49407}));
  // A long caption: 77 ids, the last is the end id, no padding.
  std::string long_text;
  for (int i = 0; i < 200; ++i) long_text += "word ";
  const auto row = encode(*clip(), long_text);
  ASSERT_EQ(row.size(), 77u);
  EXPECT_EQ(row.front(), 49406);
  EXPECT_EQ(row.back(), 49407);
  for (std::size_t i = 1; i + 1 < row.size(); ++i) EXPECT_EQ(row[i], 2653) << i;  // "word</w>"
}

TEST(ClipTokenizer, PadsWithZeros) {
  const auto row = encode(*clip(), "a cat");
  EXPECT_EQ(row[0], 49406);
  EXPECT_EQ(row[3], 49407);
  for (std::size_t i = 4; i < row.size(); ++i) EXPECT_EQ(row[i], 0) << i;
}

TEST(ClipTokenizer, ConcurrentEncodingGivesTheSameIds) {
  const auto captions = clipper::test::CaptionCorpus(7).make(300);
  std::vector<Ids> expected;
  {
    const auto single = make_tokenizer("clip", 77);
    for (const auto& c : captions) expected.push_back(encode(*single, c));
  }
  const auto shared = make_tokenizer("clip", 77);  // a cold cache, filled by all threads at once
  constexpr int kThreads = 8;
  std::vector<int> wrong(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round)
        for (std::size_t i = 0; i < captions.size(); ++i) {
          const std::size_t k = (i * 7 + static_cast<std::size_t>(t) * 31) % captions.size();
          if (encode(*shared, captions[k]) != expected[k]) ++wrong[t];
        }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(wrong[t], 0) << "thread " << t;
}

TEST(ClipTokenizer, MissingVocabularyNamesWhereItLooked) {
  const char* old = std::getenv("CLIPPER_BPE_VOCAB");
  const std::string saved = old ? old : "";
  ::setenv("CLIPPER_BPE_VOCAB", "/nonexistent/dir/bpe_simple_vocab_16e6.txt.gz", 1);
  try {
    make_tokenizer("clip", 77);
    ADD_FAILURE() << "expected an InputError";
  } catch (const clipper::core::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/bpe_simple_vocab_16e6.txt.gz"),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("CLIPPER_BPE_VOCAB"), std::string::npos) << e.what();
  }
  if (old)
    ::setenv("CLIPPER_BPE_VOCAB", saved.c_str(), 1);
  else
    ::unsetenv("CLIPPER_BPE_VOCAB");
  // Without the variable, the default places include the build tree's share/clipper.
  const auto places = clipper::tokenizer::clip_vocab_candidates();
  EXPECT_GE(places.size(), 2u);
  EXPECT_EQ(clipper::tokenizer::find_clip_vocab().find("share/clipper/") != std::string::npos,
            true);
}

TEST(ClipTokenizer, BadVocabularyFileIsReported) {
  clipper::test::TempDir dir;
  const auto path = dir.write("bpe.txt", "#version: 0.2\ni n\nbroken line with three\n");
  ::setenv("CLIPPER_BPE_VOCAB", path.c_str(), 1);
  try {
    make_tokenizer("clip", 77);
    ADD_FAILURE() << "expected an InputError";
  } catch (const clipper::core::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("line 3"), std::string::npos) << e.what();
  }
  ::unsetenv("CLIPPER_BPE_VOCAB");
}

TEST(ClipTokenizer, BadSpecsAreReported) {
  EXPECT_THROW(make_tokenizer("gpt2", 77), clipper::core::InputError);
  EXPECT_THROW(make_tokenizer("sentencepiece:", 77), clipper::core::InputError);
  EXPECT_THROW(make_tokenizer("sentencepiece:/nonexistent.model", 77), clipper::core::InputError);
  EXPECT_THROW(make_tokenizer("clip", 0), clipper::core::InputError);
  // The session's factory takes the model file's text_cfg.tokenizer_clean word.
  EXPECT_EQ(clipper::tokenizer::make_model_tokenizer("clip", 77, "canonicalize")->context_length(),
            77);
  EXPECT_THROW(clipper::tokenizer::make_model_tokenizer("clip", 77, "strip"),
               clipper::core::InputError);
}

TEST(ClipTokenizer, CliEncodePrintsRows) {
  const auto r = clipper::test::run(clipper::test::clipper_bin() +
                                    " tokenizer encode --context-length 8 'a photo of a cat' 'Hi'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "49406 320 1125 539 320 2368 49407 0\n49406 1883 49407 0 0 0 0 0\n");
  const auto bad =
      clipper::test::run(clipper::test::clipper_bin() + " tokenizer encode --spec nope 'x'");
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("unknown tokenizer 'nope'"), std::string::npos) << bad.output;
}

}  // namespace
