// "hf:" tokenizer ids equal open_clip 3.3.0's HFTokenizer (transformers 5.24 underneath) on
// Hugging Face folders of both SigLIP kinds (T5 Unigram, Gemma BPE with byte fallback) that
// tests/tokenizer/hf_tokenizer_reference.py builds from SentencePiece models trained there, in
// the Hub's layout and in transformers 5's, over a deterministic caption corpus plus
// special-token literals, whitespace runs and empty captions; clean canonicalize and whitespace,
// context lengths 64 and 16. Every mismatch is reported with its caption.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "caption_corpus.hpp"
#include "clipper/tokenizer/text_clean.hpp"
#include "clipper/tokenizer/tokenizer.hpp"
#include "test_util.hpp"

namespace {

using clipper::tokenizer::TextClean;

std::string row_text(const std::vector<std::int64_t>& row) {
  std::string s;
  for (auto v : row) s += (s.empty() ? "" : " ") + std::to_string(v);
  return s;
}

std::string quoted(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', true);
}

std::vector<std::string> captions() {
  auto out = clipper::test::CaptionCorpus(20251207).make(2500);
  const std::string overlong = [] {
    std::string s;
    for (int i = 0; i < 300; ++i) s += "word" + std::to_string(i % 17) + (i % 5 ? " " : ", ");
    return s;
  }();
  for (const std::string& s : {"",
                               " ",
                               "  \t \n ",
                               "\n\n",
                               "</s>",
                               "<pad>",
                               "<unk>",
                               "<eos> x",
                               "a<bos>b",
                               "<mask>",
                               "<start_of_turn>user hi",
                               "x <end_of_turn>",
                               "<unused0><unused0>",
                               "a </s> b </s>",
                               "<pad><pad>",
                               "<s>",
                               "x \u2581\u2581 y",
                               "\u2581",
                               "x\u2581y",
                               "\u2581\u2581\u2581a",
                               "hello_world__x",
                               "!!! ... ???",
                               "C'est l'\u00e9t\u00e9",
                               "\u00c0\u00c9\u00ce\u00d5\u00dc",
                               "1234567890 3.14159",
                               "a\u00a8b \u00b4c",
                               "\u3000ideographic\u3000space",
                               "\xf0\x9f\x98\x80\xf0\x9f\x98\x80 x \xe2\x98\x83\xe2\x98\x83"})
    out.push_back(s);
  out.push_back(overlong);
  return out;
}

struct Reference {
  std::string dir;
  std::int64_t vocab_size = 0;
  std::map<std::string, std::vector<std::vector<std::int64_t>>> rows;  // "clean/context"
};

class HfTokenizerInterop : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work_ = new clipper::test::TempDir;
    captions_ = captions();
    empty_ = static_cast<std::size_t>(std::find(captions_.begin(), captions_.end(), std::string()) -
                                      captions_.begin());
    const auto captions_path = work_->file("captions.json");
    std::ofstream(captions_path) << nlohmann::json(captions_).dump();
    const auto out = work_->file("ref.json");
    const auto r =
        clipper::test::run(clipper::test::python() + " " +
                           clipper::test::source_path("tests/tokenizer/hf_tokenizer_reference.py") +
                           " " + captions_path + " " + work_->path().string() + " " + out);
    if (r.exit_code != 0) {
      error_ = "hf_tokenizer_reference.py failed:\n" + r.output;
      return;
    }
    std::ifstream in(out);
    const auto j = nlohmann::json::parse(in);
    for (const auto& [name, f] : j.at("folders").items()) {
      Reference ref{f.at("dir"), f.at("vocab_size"), {}};
      for (const auto& [key, rows] : f.at("rows").items())
        ref.rows[key] = rows.get<std::vector<std::vector<std::int64_t>>>();
      refs_[name] = std::move(ref);
    }
  }
  static void TearDownTestSuite() {
    delete work_;
    work_ = nullptr;
  }

  // The two cases where libsentencepiece (SigLIP's T5 folders) and the `tokenizers` library part
  // (docs/tokenizer.md), which clipper must follow tokenizers on: a unit of 1-6 bytes repeated 4
  // times or more in a row (equally scored splits, ties broken another way) and U+1E9B (the long
  // s with dot, normalized per grapheme). The corpus must hold enough of them.
  static bool tie_or_grapheme_case(const std::string& text) {
    if (text.find("\xE1\xBA\x9B") != std::string::npos) return true;  // U+1E9B
    for (std::size_t unit = 1; unit <= 6; ++unit)
      for (std::size_t i = 0; i + 4 * unit <= text.size(); ++i) {
        int repeats = 1;
        while (i + (repeats + 1) * unit <= text.size() &&
               text.compare(i + repeats * unit, unit, text, i, unit) == 0)
          ++repeats;
        if (repeats >= 4) return true;
      }
    return false;
  }

  void check_folder(const std::string& name) {
    ASSERT_TRUE(error_.empty()) << error_;
    ASSERT_TRUE(refs_.count(name)) << name;
    const auto& ref = refs_.at(name);
    for (const auto& [key, rows] : ref.rows) {
      const auto slash = key.find('/');
      const TextClean clean = *clipper::tokenizer::parse_text_clean(key.substr(0, slash));
      const std::int64_t context = std::stoll(key.substr(slash + 1));
      const auto tok = clipper::tokenizer::make_tokenizer("hf:" + ref.dir, context, clean);
      EXPECT_EQ(tok->vocab_size(), ref.vocab_size) << name;
      ASSERT_EQ(rows.size(), captions_.size());
      std::vector<std::int64_t> row(static_cast<std::size_t>(context));
      const std::int64_t pad = rows[empty_].back();  // "": the end id, then padding
      std::size_t mismatches = 0, full = 0, hard = 0;
      for (std::size_t i = 0; i < captions_.size(); ++i) {
        tok->encode(captions_[i], row.data());
        if (rows[i][rows[i].size() - 2] != pad) ++full;  // filled: the text was cut or fit
        hard += tie_or_grapheme_case(captions_[i]) ? 1 : 0;
        if (row == rows[i]) continue;
        if (++mismatches <= 20)
          ADD_FAILURE() << name << " " << key << " caption " << i << ": " << quoted(captions_[i])
                        << "\n  cleaned:   "
                        << quoted(clipper::tokenizer::clean_text(captions_[i], clean))
                        << "\n  clipper:   " << row_text(row)
                        << "\n  open_clip: " << row_text(rows[i]);
      }
      std::cout << "[interop] " << name << " " << key << ": " << captions_.size() << " captions ("
                << full << " fill the row), " << mismatches
                << " differ from open_clip's HFTokenizer";
      std::cout << " (" << hard << " with ties or U+1E9B)\n";
      EXPECT_EQ(mismatches, 0u) << name << " " << key;
      EXPECT_GT(hard, 40u) << "the corpus does exercise equal-score splits and U+1E9B";
      EXPECT_GT(full, context == 16 ? 1000u : 20u) << "the corpus does exercise truncation";
    }
  }

  static clipper::test::TempDir* work_;
  static std::vector<std::string> captions_;
  static std::map<std::string, Reference> refs_;
  static std::string error_;
  static std::size_t empty_;
};

clipper::test::TempDir* HfTokenizerInterop::work_ = nullptr;
std::vector<std::string> HfTokenizerInterop::captions_;
std::map<std::string, Reference> HfTokenizerInterop::refs_;
std::string HfTokenizerInterop::error_;
std::size_t HfTokenizerInterop::empty_ = 0;

// One test, so that the reference (a Python process, seconds) is made once: SigLIP's T5Tokenizer
// (spiece.model, Unigram, nmt_nfkc, pad = eos = 1, eos appended) and SigLIP 2's GemmaTokenizer
// (tokenizer.model, BPE with byte fallback, pad 0, eos appended, no bos), each in the Hub's
// layout and as transformers 5 saves it (T5 also with transformers 4's tokenizer.json pipeline).
TEST_F(HfTokenizerInterop, IdsEqualOpenClipHFTokenizerOnBothKinds) {
  for (const char* name : {"gemma-hub", "gemma-v5", "t5-hub", "t5-v5", "t5-v4"})
    check_folder(name);
}

}  // namespace
