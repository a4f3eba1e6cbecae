// The "hf:" tokenizer without Python: where a NAME is looked for, the errors for a bad folder,
// the special-token rules (flags, tokenizer.json's template, padding and truncation sides, token
// literals), the cleaning words, copying the files for an export, and the CLI. Folders are made
// from a SentencePiece model trained here (clipper's layout: <pad> 0, <unk> 1, <s> 2, </s> 3);
// tests/tokenizer/test_hf_tokenizer_interop.cpp checks the ids against open_clip.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/tokenizer/hf_files.hpp"
#include "clipper/tokenizer/sentencepiece_train.hpp"
#include "clipper/tokenizer/text_clean.hpp"
#include "clipper/tokenizer/tokenizer.hpp"
#include "test_util.hpp"

namespace {

namespace fs = std::filesystem;
using clipper::test::error_of;
using clipper::tokenizer::make_tokenizer;
using clipper::tokenizer::TextClean;
using nlohmann::json;

constexpr std::int64_t kPieces = 28;  // the most this corpus allows

// One tiny model for the whole file (training takes a moment).
const std::string& trained_model() {
  static clipper::test::TempDir dir;
  static const std::string model = [] {
    const char* words[] = {"a", "dog", "cat", "on", "the", "grass", "photo", "of", "two", "red"};
    std::mt19937 rng(5);
    std::string text;
    for (int i = 0; i < 300; ++i) {
      for (int k = 0; k < 6; ++k) text += std::string(k ? " " : "") + words[rng() % 10];
      text += "\n";
    }
    clipper::tokenizer::SentencePieceTrainOptions o;
    o.input = dir.write("captions.txt", text);
    o.vocab_size = kPieces;
    o.out_prefix = dir.file("sp");
    return clipper::tokenizer::train_sentencepiece(o);
  }();
  return model;
}

// A folder with the model as `model_name` and `config` as tokenizer_config.json.
std::string make_folder(const clipper::test::TempDir& tmp, const std::string& name,
                        const json& config, const std::string& model_name = "spiece.model") {
  const fs::path dir = tmp.path() / name;
  fs::create_directories(dir);
  if (!model_name.empty()) fs::copy_file(trained_model(), dir / model_name);
  if (!config.is_null()) std::ofstream(dir / "tokenizer_config.json") << config.dump(2);
  return dir.string();
}

json t5_config() {
  return {{"tokenizer_class", "T5Tokenizer"},
          {"eos_token", "</s>"},
          {"pad_token", "</s>"},
          {"unk_token", "<unk>"}};
}

std::vector<std::int64_t> encode(const std::string& spec, std::int64_t n, const std::string& text,
                                 TextClean clean = TextClean::whitespace) {
  std::vector<std::int64_t> row(static_cast<std::size_t>(n), -7);
  make_tokenizer(spec, n, clean)->encode(text, row.data());
  return row;
}

// The SentencePiece ids of a text as a plain "sentencepiece:" row gives them (start 2, end
// kPieces).
std::vector<std::int64_t> pieces(const std::string& text) {
  auto row = encode("sentencepiece:" + trained_model(), 64, text);
  std::vector<std::int64_t> out;
  for (std::size_t i = 1; i < row.size() && row[i] != kPieces; ++i) out.push_back(row[i]);
  return out;
}

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (had_)
      ::setenv(name_, old_.c_str(), 1);
    else
      ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(HfTokenizer, T5FolderAppendsEosAndPadsRight) {
  clipper::test::TempDir tmp;
  const auto dir = make_folder(tmp, "t5", t5_config());
  const auto ids = pieces("a dog on the grass");
  ASSERT_GE(ids.size(), 3u);
  auto want = ids;
  want.push_back(3);   // </s>
  want.resize(40, 3);  // pad_token </s>
  EXPECT_EQ(encode("hf:" + dir, 40, "a dog on the grass"), want);
  EXPECT_EQ(make_tokenizer("hf:" + dir, 16)->vocab_size(), kPieces);
  // Too long: the text's ids are cut, the end id stays.
  const auto cut = encode("hf:" + dir, 3, "a dog on the grass");
  EXPECT_EQ(cut, (std::vector<std::int64_t>{ids[0], ids[1], 3}));
  EXPECT_EQ(encode("hf:" + dir, 1, "a dog"), (std::vector<std::int64_t>{3}));
  EXPECT_EQ(encode("hf:" + dir, 4, ""), (std::vector<std::int64_t>{3, 3, 3, 3}));
}

TEST(HfTokenizer, SpecialTokenLiteralsAreTheirIdsUnlessCleanedAway) {
  clipper::test::TempDir tmp;
  const auto dir = make_folder(tmp, "t5", t5_config());
  const auto a = pieces("a"), b = pieces("dog");
  std::vector<std::int64_t> want = a;
  want.push_back(3);  // the literal </s>
  want.insert(want.end(), b.begin(), b.end());
  want.push_back(3);
  want.resize(12, 3);
  EXPECT_EQ(encode("hf:" + dir, 12, "a</s>dog"), want);
  want = a;
  want.push_back(0);  // <pad>: a control piece of the model
  want.insert(want.end(), b.begin(), b.end());
  want.push_back(3);
  want.resize(12, 3);
  EXPECT_EQ(encode("hf:" + dir, 12, "a <pad> dog"), want);
  // canonicalize removes '<', '/' and '>': no special token is left.
  EXPECT_EQ(encode("hf:" + dir, 12, "a</s>dog", TextClean::canonicalize),
            encode("hf:" + dir, 12, "asdog"));
}

TEST(HfTokenizer, GemmaFlagsSidesAndTemplate) {
  clipper::test::TempDir tmp;
  json cfg = {{"tokenizer_class", "GemmaTokenizer"},
              {"bos_token", "<s>"},
              {"eos_token", "</s>"},
              {"pad_token", "<pad>"},
              {"unk_token", "<unk>"},
              {"mask_token", nullptr}};
  const auto ids = pieces("a dog on the grass");
  // No tokenizer.json, no flags: nothing added, padded on the left (GemmaTokenizer's default).
  auto dir = make_folder(tmp, "plain", cfg, "tokenizer.model");
  auto want = std::vector<std::int64_t>(40 - ids.size(), 0);
  want.insert(want.end(), ids.begin(), ids.end());
  EXPECT_EQ(encode("hf:" + dir, 40, "a dog on the grass"), want);
  // The flags, padding on the right, truncation on the left.
  cfg["add_bos_token"] = true;
  cfg["add_eos_token"] = true;
  cfg["padding_side"] = "right";
  dir = make_folder(tmp, "flags", cfg, "tokenizer.model");
  want = {2};
  want.insert(want.end(), ids.begin(), ids.end());
  want.push_back(3);
  want.resize(40, 0);
  EXPECT_EQ(encode("hf:" + dir, 40, "a dog on the grass"), want);
  cfg["truncation_side"] = "left";
  dir = make_folder(tmp, "left", cfg, "tokenizer.model");
  EXPECT_EQ(encode("hf:" + dir, 4, "a dog on the grass"),
            (std::vector<std::int64_t>{2, ids[ids.size() - 2], ids.back(), 3}));
  // tokenizer.json's TemplateProcessing wins over the flags (transformers 5 drops them then).
  json tj = {{"post_processor",
              {{"type", "TemplateProcessing"},
               {"single", json::array({{{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                       {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}})},
               {"special_tokens", {{"</s>", {{"id", "</s>"}, {"ids", {3}}}}}}}},
             {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}}}};
  std::ofstream(fs::path(dir) / "tokenizer.json") << tj.dump();
  EXPECT_EQ(encode("hf:" + dir, 4, "a dog on the grass"),
            (std::vector<std::int64_t>{ids[ids.size() - 3], ids[ids.size() - 2], ids.back(), 3}));
}

TEST(HfTokenizer, CleanWords) {
  for (auto c : {TextClean::whitespace, TextClean::canonicalize, TextClean::lower})
    EXPECT_EQ(clipper::tokenizer::parse_text_clean(clipper::tokenizer::name_of(c)), c);
  EXPECT_FALSE(clipper::tokenizer::parse_text_clean("Canonicalize").has_value());
  EXPECT_FALSE(clipper::tokenizer::parse_text_clean("").has_value());
  using clipper::tokenizer::clean_text;
  const std::string s = "  Hello_World!  It's &amp;  <b>OK</b>\t\u00c9t\u00e9 ";
  EXPECT_EQ(clean_text(s, TextClean::whitespace), "Hello_World! It's & <b>OK</b> \u00c9t\u00e9");
  EXPECT_EQ(clean_text(s, TextClean::lower), "hello_world! it's & <b>ok</b> \u00e9t\u00e9");
  EXPECT_EQ(clean_text(s, TextClean::canonicalize), "hello world its bokb \u00e9t\u00e9");
}

TEST(HfTokenizer, BadFoldersAreInputErrors) {
  clipper::test::TempDir tmp;
  auto err = error_of([&] { make_tokenizer("hf:" + tmp.file("none/x"), 16); });
  EXPECT_NE(err.find("does not exist"), std::string::npos) << err;
  err = error_of([&] { make_tokenizer("hf:", 16); });
  EXPECT_NE(err.find("hf:NAME_OR_PATH"), std::string::npos) << err;
  // tokenizer.json alone: the SentencePiece model is needed.
  auto dir = make_folder(tmp, "json-only", t5_config(), "");
  std::ofstream(fs::path(dir) / "tokenizer.json") << "{}";
  err = error_of([&] { make_tokenizer("hf:" + dir, 16); });
  EXPECT_NE(err.find("spiece.model"), std::string::npos) << err;
  EXPECT_NE(err.find("tokenizer.json alone"), std::string::npos) << err;
  dir = make_folder(tmp, "no-config", nullptr);
  err = error_of([&] { make_tokenizer("hf:" + dir, 16); });
  EXPECT_NE(err.find("tokenizer_config.json"), std::string::npos) << err;
  dir = make_folder(tmp, "bert", {{"tokenizer_class", "BertTokenizer"}});
  err = error_of([&] { make_tokenizer("hf:" + dir, 16); });
  EXPECT_NE(err.find("BertTokenizer"), std::string::npos) << err;
  auto cfg = t5_config();
  cfg["pad_token"] = nullptr;
  dir = make_folder(tmp, "no-pad", cfg);
  err = error_of([&] { make_tokenizer("hf:" + dir, 16); });
  EXPECT_NE(err.find("pad_token"), std::string::npos) << err;
  cfg = t5_config();
  cfg["eos_token"] = "<eos>";
  dir = make_folder(tmp, "bad-eos", cfg);
  err = error_of([&] { make_tokenizer("hf:" + dir, 16); });
  EXPECT_NE(err.find("'<eos>' is neither a piece"), std::string::npos) << err;
  dir = make_folder(tmp, "bad-json", nullptr);
  std::ofstream(fs::path(dir) / "tokenizer_config.json") << "{ not json";
  err = error_of([&] { make_tokenizer("hf:" + dir, 16); });
  EXPECT_NE(err.find("not valid JSON"), std::string::npos) << err;
  cfg = t5_config();
  cfg["padding_side"] = "middle";
  dir = make_folder(tmp, "bad-side", cfg);
  err = error_of([&] { make_tokenizer("hf:" + dir, 16); });
  EXPECT_NE(err.find("padding_side"), std::string::npos) << err;
}

TEST(HfTokenizer, NamesResolveThroughDirsThenTheHubCache) {
  clipper::test::TempDir tmp;
  const ScopedEnv no_hub("HF_HUB_CACHE", "");
  const ScopedEnv home("HF_HOME", tmp.file("hf-home"));
  {
    const ScopedEnv dirs("CLIPPER_HF_TOKENIZER_DIRS", tmp.file("none") + "::" + tmp.file("d2"));
    const auto err = error_of([] { make_tokenizer("hf:timm/ViT-X-SigLIP", 16); });
    EXPECT_NE(err.find(tmp.file("none") + "/timm/ViT-X-SigLIP"), std::string::npos) << err;
    EXPECT_NE(err.find(tmp.file("d2") + "/timm/ViT-X-SigLIP"), std::string::npos) << err;
    EXPECT_NE(err.find("models--timm--ViT-X-SigLIP"), std::string::npos) << err;
    EXPECT_NE(err.find("downloads nothing"), std::string::npos) << err;
    // The hub cache: refs/main names the snapshot; without it, the newest one.
    const auto repo = tmp.file("hf-home/hub/models--timm--ViT-X-SigLIP");
    make_folder(tmp, "hf-home/hub/models--timm--ViT-X-SigLIP/snapshots/aaa", t5_config());
    auto cfg = t5_config();
    cfg["padding_side"] = "left";
    make_folder(tmp, "hf-home/hub/models--timm--ViT-X-SigLIP/snapshots/bbb", cfg);
    fs::last_write_time(repo + "/snapshots/aaa",
                        fs::last_write_time(repo + "/snapshots/bbb") - std::chrono::hours(1));
    EXPECT_EQ(clipper::tokenizer::find_hf_tokenizer_dir("timm/ViT-X-SigLIP"),
              repo + "/snapshots/bbb");
    tmp.write("hf-home/hub/models--timm--ViT-X-SigLIP/refs/main", "aaa");
    EXPECT_EQ(clipper::tokenizer::find_hf_tokenizer_dir("timm/ViT-X-SigLIP"),
              repo + "/snapshots/aaa");
    EXPECT_NE(encode("hf:timm/ViT-X-SigLIP", 40, "a")[0], 3);  // aaa pads on the right
    // A folder in a listed dir comes first.
    make_folder(tmp, "d2/timm/ViT-X-SigLIP", t5_config());
    EXPECT_EQ(clipper::tokenizer::find_hf_tokenizer_dir("timm/ViT-X-SigLIP"),
              tmp.file("d2") + "/timm/ViT-X-SigLIP");
  }
  // A path that looks like one is never searched for.
  const auto err = error_of([] { make_tokenizer("hf:./timm/ViT-X-SigLIP", 16); });
  EXPECT_NE(err.find("does not exist"), std::string::npos) << err;
}

TEST(HfTokenizer, CopyFilesForAnExport) {
  clipper::test::TempDir tmp;
  const auto dir = make_folder(tmp, "t5", t5_config());
  tmp.write("t5/special_tokens_map.json", R"({"eos_token": "</s>", "pad_token": "</s>"})");
  clipper::tokenizer::copy_hf_tokenizer_files("hf:" + dir, tmp.file("out/model"));
  for (const char* f : {"tokenizer_config.json", "special_tokens_map.json", "spiece.model"})
    EXPECT_EQ(clipper::core::read_file(tmp.file("out/model/") + f),
              clipper::core::read_file(dir + "/" + f))
        << f;
  EXPECT_FALSE(fs::exists(tmp.file("out/model/tokenizer.json")));
  EXPECT_EQ(encode("hf:" + tmp.file("out/model"), 16, "a red cat"),
            encode("hf:" + dir, 16, "a red cat"));
  auto err = error_of([&] {
    clipper::tokenizer::copy_hf_tokenizer_files("sentencepiece:" + trained_model(), tmp.file("x"));
  });
  EXPECT_NE(err.find("hf:NAME_OR_PATH"), std::string::npos) << err;
}

TEST(HfTokenizer, CliEncodesWithCleanAndRejectsUnknownWords) {
  clipper::test::TempDir tmp;
  const auto dir = make_folder(tmp, "t5", t5_config());
  auto r = clipper::test::run(clipper::test::clipper_bin() + " tokenizer encode --spec hf:" + dir +
                              " --clean canonicalize --context-length 8 'A Dog, on_the grass!' "
                              "2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string want;
  for (auto v : encode("hf:" + dir, 8, "a dog on the grass")) want += std::to_string(v) + " ";
  want.back() = '\n';
  EXPECT_EQ(r.output, want);
  r = clipper::test::run(clipper::test::clipper_bin() + " tokenizer encode --spec hf:" + dir +
                         " --clean tidy 'a dog'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("tidy"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("canonicalize"), std::string::npos) << r.output;
}

}  // namespace
