// Token ids equal open_clip.tokenize (open-clip-torch 3.3.0) on a deterministic corpus of varied
// captions, at context length 77 and, for truncation, 16. Every mismatch is reported with its
// caption; no caption is left out.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "caption_corpus.hpp"
#include "clipper/tokenizer/clip_clean.hpp"
#include "clipper/tokenizer/tokenizer.hpp"
#include "test_util.hpp"

namespace {

constexpr std::size_t kCaptions = 1500;

std::string row_text(const std::vector<std::int64_t>& row) {
  std::string s;
  for (auto v : row) s += (s.empty() ? "" : " ") + std::to_string(v);
  return s;
}

void check_against_open_clip(std::int64_t context_length) {
  const auto captions = clipper::test::CaptionCorpus(20240601).make(kCaptions);
  clipper::test::TempDir dir;
  const auto captions_path = dir.file("captions.json");
  std::ofstream(captions_path) << nlohmann::json(captions).dump();
  const auto ref_path = dir.file("ref.json");
  const auto r =
      clipper::test::run(clipper::test::python() + " " +
                         clipper::test::source_path("tests/tokenizer/open_clip_tokenize.py") + " " +
                         captions_path + " " + std::to_string(context_length) + " " + ref_path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(ref_path);
  const auto ref = nlohmann::json::parse(in);
  ASSERT_EQ(ref.size(), captions.size());

  const auto tok = clipper::tokenizer::make_tokenizer("clip", context_length);
  std::size_t mismatches = 0, truncated = 0, non_ascii = 0;
  std::vector<std::int64_t> row(static_cast<std::size_t>(context_length));
  for (std::size_t i = 0; i < captions.size(); ++i) {
    tok->encode(captions[i], row.data());
    const auto want = ref[i].get<std::vector<std::int64_t>>();
    if (row.back() != 0) ++truncated;
    for (unsigned char c : captions[i]) {
      if (c >= 0x80) {
        ++non_ascii;
        break;
      }
    }
    if (row != want) {
      ++mismatches;
      ADD_FAILURE()
          << "caption " << i << ": " << nlohmann::json(captions[i]).dump(-1, ' ', true)
          << "\n  cleaned:   "
          << nlohmann::json(clipper::tokenizer::clip_clean(captions[i])).dump(-1, ' ', true)
          << "\n  clipper:   " << row_text(row) << "\n  open_clip: " << row_text(want);
    }
  }
  std::cout << "[interop] context " << context_length << ": " << captions.size() << " captions ("
            << non_ascii << " with non-ASCII text, " << truncated << " truncated), " << mismatches
            << " differ from open_clip.tokenize, 0 left out\n";
  EXPECT_EQ(mismatches, 0u);
  EXPECT_GT(truncated, 10u);  // the corpus does exercise truncation
}

TEST(TokenizerInterop, IdsEqualOpenClipTokenize) {
  check_against_open_clip(77);
}

TEST(TokenizerInterop, TruncationEqualsOpenClipTokenize) {
  check_against_open_clip(16);
}

// `clipper tokenizer encode --file` prints the same rows as the library.
TEST(TokenizerInterop, CliEncodeFileMatchesLibrary) {
  auto captions = clipper::test::CaptionCorpus(99).make(200);
  clipper::test::TempDir dir;
  std::string text;
  std::vector<std::string> lines;
  for (auto& c : captions) {
    if (c.find('\n') != std::string::npos || c.find('\r') != std::string::npos) continue;
    text += c + "\n";
    lines.push_back(c);
  }
  const auto path = dir.write("captions.txt", text);
  const auto r = clipper::test::run(clipper::test::clipper_bin() + " tokenizer encode --file " +
                                    path + " 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto tok = clipper::tokenizer::make_tokenizer("clip", 77);
  std::vector<std::int64_t> row(77);
  std::string want;
  for (const auto& c : lines) {
    tok->encode(c, row.data());
    want += row_text(row) + "\n";
  }
  EXPECT_EQ(r.output, want);
}

}  // namespace
