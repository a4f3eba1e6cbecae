// Interop with Hugging Face transformers (label interop): `clipper export --format hf` loads in
// transformers.CLIPModel.from_pretrained exactly, with clipper's image and text features (fp32,
// CPU, random weights, 1e-5), and CLIPTokenizer.from_pretrained gives clipper's token ids.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "clipper/core/atomic_file.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/io/safetensors.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/tokenizer/tokenizer.hpp"
#include "cut_model.hpp"
#include "test_util.hpp"

namespace cio = clipper::io;
namespace cm = clipper::model;

namespace {

constexpr double kTol = 1e-5;

// Punctuation, contractions, digits, accents, CJK, emoji, odd whitespace, an empty string and
// one longer than any context (cut). Not HTML entities or mojibake: open_clip (and clipper)
// unescape "&amp;" and apply ftfy's fixes, CLIPTokenizer does neither (docs/training.md).
const std::vector<std::string> kStrings = {
    "a photo of a cat",
    "A DOG, running!! (fast?) -- on the beach...",
    "it's we're they've I'm you'll he'd don't",
    "numbers 12345 and 3.14159, 1st 2nd",
    "na\xc3\xafve caf\xc3\xa9 d\xc3\xa9j\xc3\xa0 vu \xc3\xbc"
    "ber stra\xc3\x9f"
    "e",
    "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83"
    "\x88 \xe4\xb8\xad\xe6\x96\x87",
    "emoji \xf0\x9f\x90\xb1\xf0\x9f\x9a\x80 ok \xe2\x9c\x93",
    "  multiple   spaces\tand\nnewlines  ",
    "",
    "#hashtag @user http://example.com/a_b?c=d&e=f",
    "a very long caption that goes on and on about many things in great detail so that it is "
    "certainly longer than the context length of the tiny model and gets cut at the end",
};

std::map<std::string, at::Tensor> run_python(const clipper::test::TempDir& dir,
                                             const std::string& export_dir) {
  const std::string cmd =
      clipper::test::python() + " " + clipper::test::source_path("tests/io/hf_interop.py") +
      " --dir " + export_dir + " --inputs " + dir.file("inputs.safetensors") + " --strings " +
      dir.file("strings.json") + " --out " + dir.file("out.safetensors");
  const auto r = clipper::test::run(cmd);
  EXPECT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;
  std::cout << r.output;
  std::map<std::string, at::Tensor> py;
  if (r.exit_code != 0) return py;
  for (auto& [k, v] : cio::load_safetensors(dir.file("out.safetensors"))) py[k] = v;
  return py;
}

void expect_close(const at::Tensor& ours, const at::Tensor& theirs, const std::string& what) {
  ASSERT_EQ(ours.sizes(), theirs.sizes()) << what;
  const double diff = (ours - theirs).abs().max().item<double>();
  const double scale = std::max(1.0, theirs.abs().max().item<double>());
  std::cout << "[transformers] " << what << ": max |diff| " << diff << ", max |value| " << scale
            << "\n";
  EXPECT_LE(diff, kTol * scale) << what;
}

// clipper's ids equal CLIPTokenizer's up to and including the end-of-text token; after it
// clipper pads with 0 and transformers with <|endoftext|> (the script wrote -1 there).
void expect_same_ids(const at::Tensor& ours, const at::Tensor& hf, std::int64_t eot) {
  ASSERT_EQ(ours.sizes(), hf.sizes());
  for (std::int64_t i = 0; i < ours.size(0); ++i) {
    const auto row = ours[i];
    std::int64_t end = 0;
    while (row[end].item<std::int64_t>() != eot) ++end;
    EXPECT_TRUE(at::equal(row.narrow(0, 0, end + 1), hf[i].narrow(0, 0, end + 1)))
        << "string " << i << " '" << kStrings[i] << "': clipper " << row << "\ntransformers "
        << hf[i];
    EXPECT_EQ(hf[i][end + 1 < hf.size(1) ? end + 1 : end].item<std::int64_t>(),
              end + 1 < hf.size(1) ? -1 : eot)
        << "string " << i << ": transformers' end-of-text is elsewhere";
  }
}

void run_hf_interop(const std::string& name, std::int64_t batch) {
  at::set_num_threads(2);
  clipper::test::TempDir dir;
  const auto spec = cm::load_model_spec(name);
  auto ours = cm::create_model(spec, 11);
  cio::save_safetensors(dir.file("weights.safetensors"), cio::model_state_dict(*ours));
  const std::string cmd = clipper::test::clipper_bin() + " export " +
                          dir.file("weights.safetensors") + " --model " + name +
                          " --format hf --out " + dir.file("hf");
  const auto r = clipper::test::run(cmd);
  ASSERT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;

  const auto tok = clipper::tokenizer::make_tokenizer("clip", spec.context_length);
  const auto n = static_cast<std::int64_t>(kStrings.size());
  auto tokens = at::zeros({n, spec.context_length}, at::kLong);
  for (std::int64_t i = 0; i < n; ++i) tok->encode(kStrings[i], tokens[i].data_ptr<std::int64_t>());
  at::manual_seed(17);
  const auto images = at::randn({batch, 3, spec.image_size, spec.image_size});
  cio::save_safetensors(dir.file("inputs.safetensors"), {{"images", images}, {"tokens", tokens}});
  dir.write("strings.json", nlohmann::json(kStrings).dump());

  const auto py = run_python(dir, dir.file("hf"));
  ASSERT_FALSE(py.empty());
  at::NoGradGuard g;
  ours->eval();
  expect_close(ours->encode_image(images, false), py.at("image"), name + " image features");
  const auto text = ours->encode_text(tokens, false);
  expect_close(text, py.at("text"), name + " text features of clipper's ids");
  expect_close(text, py.at("text_hf_ids"), name + " text features of CLIPTokenizer's ids");
  expect_same_ids(tokens, py.at("hf_ids"), spec.vocab_size - 1);
}

}  // namespace

TEST(TransformersInterop, TinyViTFeaturesAndTokenizerIds) {
  run_hf_interop("tiny-vit", 3);
}
// OpenCLIP's pool_type "eos" (the first end-of-text id) is transformers' eos_token_id rule.
TEST(TransformersInterop, TinyViTEosPooling) {
  clipper::test::TempDir dir;
  auto text = clipper::core::read_file(clipper::test::source_path("configs/models/tiny-vit.yaml"));
  text.replace(text.find("  layers: 3\n"), 12, "  layers: 3\n  pool_type: eos\n  eos_id: 49407\n");
  const auto path = dir.write("tiny-vit-eos.yaml", text);
  ASSERT_EQ(cm::load_model_spec(path).text_pool, cm::TextPool::eos);
  run_hf_interop(path, 2);
}
// ViT-B-32 cut to 2 blocks per tower (tests/io/cut_model.hpp); whole at full depth.
TEST(TransformersInterop, ViT_B_32_TwoBlocksFeaturesAndTokenizerIds) {
  clipper::test::TempDir dir;
  run_hf_interop(clipper::test::interop_full_depth()
                     ? std::string("ViT-B-32")
                     : clipper::test::write_cut_model(dir, "ViT-B-32"),
                 2);
}
