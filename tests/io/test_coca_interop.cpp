// CoCa against open_clip 3.3.0 (label interop; tests/io/coca_interop.py, one Python process):
// clipper's CoCa export loads strictly in open_clip (create_model("local-dir:...") for tiny-coca
// and the shipped configs cut to 2 layers per tower; create_model("coca_ViT-B-32", pretrained=...)
// for the full-size B/32), and on the same weights and batch the image and text features, the
// caption logits, the labels, both CoCaLoss terms and every parameter's gradient of their sum
// equal open_clip's. The shipped configs equal open_clip's and have its parameter counts (meta
// device). fp32, CPU, random weights.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "clipper/config/config.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/io/safetensors.hpp"
#include "clipper/loss/clip_loss.hpp"
#include "clipper/loss/coca_loss.hpp"
#include "clipper/model/caption.hpp"
#include "clipper/model/clip.hpp"
#include "clipper/model/flops.hpp"
#include "cut_model.hpp"
#include "test_util.hpp"

namespace cio = clipper::io;
namespace cm = clipper::model;

namespace {

constexpr double kTol = 1e-5;
constexpr std::int64_t kSot = 49406, kEot = 49407;
const char* const kShipped[] = {"coca_ViT-B-32", "coca_ViT-L-14", "coca_base"};

std::string script() {
  return clipper::test::source_path("tests/io/coca_interop.py");
}

// Rows of token ids as open_clip's tokenizer gives them: start, ids, end, zero padding; one row
// fills the context. The start and end ids are the vocabulary's last two, as CLIP's are (49406,
// 49407 of 49408).
at::Tensor make_tokens(std::int64_t b, std::int64_t l, std::int64_t vocab = kEot + 1) {
  const auto sot = vocab - 2, eot = vocab - 1;
  auto t = at::zeros({b, l}, at::kLong);
  for (std::int64_t i = 0; i < b; ++i) {
    const auto len = i + 1 == b ? l - 1 : 2 + (i * 5 + 1) % (l - 3);
    t[i][0] = sot;
    t[i].narrow(0, 1, len - 1).copy_(at::randint(1, sot, {len - 1}, at::kLong));
    t[i][len] = eot;
  }
  return t;
}

void randomize(cm::ClipImpl& m) {
  at::NoGradGuard g;
  at::manual_seed(11);
  for (auto& p : m.parameters())
    if (p.dim() > 0) p.add_(at::randn_like(p) * 0.02);
}

struct Case {
  std::string name;
  cm::ModelSpec spec;
  std::map<std::string, at::Tensor> ours;
};

// clipper's forward, loss (clip weight 1, caption weight 2, pad 0) and gradients.
std::map<std::string, at::Tensor> our_outputs(cm::Clip& m, const at::Tensor& images,
                                              const at::Tensor& tokens) {
  m->eval();
  m->zero_grad();
  const auto out = m->forward_coca(images, tokens);
  auto pg = std::make_shared<clipper::dist::ProcessGroup>();
  clipper::loss::ClipLoss clip(pg, clipper::config::LossConfig{});
  const auto clip_loss = clip.forward(out.image_features, out.text_features, out.logit_scale);
  const auto caption = 2.0 * clipper::loss::caption_loss(out.logits, out.labels, 0);
  (clip_loss + caption).backward();
  std::map<std::string, at::Tensor> r{{"image_features", out.image_features.detach()},
                                      {"text_features", out.text_features.detach()},
                                      {"logits", out.logits.detach()},
                                      {"labels", out.labels.to(at::kFloat)},
                                      {"clip_loss", clip_loss.detach().reshape({1})},
                                      {"caption_loss", caption.detach().reshape({1})}};
  for (const auto& item : m->named_parameters())
    if (item.value().grad().defined()) r["g." + item.key()] = item.value().grad().clone();
  return r;
}

void expect_close(const std::map<std::string, at::Tensor>& ours,
                  const std::map<std::string, at::Tensor>& theirs, const std::string& what) {
  double worst_grad = 0.0;
  for (const auto& [k, v] : ours) {
    ASSERT_TRUE(theirs.count(k)) << what << ": open_clip gave no " << k;
    const auto o = theirs.at(k).to(at::kFloat);
    ASSERT_EQ(v.sizes(), o.sizes()) << what << " " << k;
    const double diff = (v - o).abs().max().item<double>();
    const double scale = std::max(1.0, o.abs().max().item<double>());
    EXPECT_LE(diff, kTol * scale) << what << " " << k << ": max |diff| " << diff;
    if (k.rfind("g.", 0) == 0)
      worst_grad = std::max(worst_grad, diff / scale);
    else
      std::cout << "[coca] " << what << " " << k << ": max |diff| " << diff << ", max |value| "
                << scale << "\n";
  }
  std::size_t grads = 0;
  for (const auto& [k, v] : theirs) grads += k.rfind("g.", 0) == 0;
  std::cout << "[coca] " << what << ": " << grads << " gradients, worst max |diff| / scale "
            << worst_grad << "\n";
  for (const auto& [k, v] : theirs)
    if (k.rfind("g.", 0) == 0) EXPECT_TRUE(ours.count(k)) << what << ": clipper has no " << k;
}

std::map<std::string, at::Tensor> load(const std::string& path) {
  std::map<std::string, at::Tensor> out;
  for (auto& [k, v] : cio::load_safetensors(path)) out[k] = v;
  return out;
}

}  // namespace

TEST(CocaInterop, FeaturesLogitsLossAndGradientsEqualOpenClips) {
  at::set_num_threads(2);
  clipper::test::TempDir dir;
  nlohmann::json job;
  // The shipped configs: open_clip's fields and parameter counts.
  for (const std::string name : kShipped) {
    const auto spec = cm::load_model_spec(name);
    job["counts"][name] = cm::parameter_count(spec);
    job["configs"][name] = dir.write(name + ".json", cio::openclip_model_cfg_json(spec));
  }
  // tiny-coca whole (and with the ViT as wide as embed_dim); the shipped ones cut to 2 layers per
  // tower and a 1,000-token vocabulary (attentional pooler with its separate q/k/v projections in
  // B/32; coca_base's class token and patch tokens). Their shipped vocabularies (49,408 and
  // 64,000 rows in the embedding and the decoder's output) made most of the test's time; the
  // vocabulary's size changes no code path (scripts/check_full_depth.sh runs B/32 whole).
  std::vector<Case> cases;
  cases.push_back({"tiny-coca", cm::load_model_spec("tiny-coca"), {}});
  auto packed = cm::load_model_spec("tiny-coca");
  packed.vision_width = packed.embed_dim;  // the pooler's packed in_proj_weight
  cases.push_back({"tiny-coca-packed", packed, {}});
  for (const std::string name : {"coca_ViT-B-32", "coca_base"}) {
    auto spec = cm::load_model_spec(name);
    spec.vision_layers = spec.text_layers = spec.decoder_layers = 2;
    spec.vocab_size = 1000;
    cases.push_back({name + "-2-layers", spec, {}});
  }
  at::manual_seed(3);
  for (auto& c : cases) {
    auto m = cm::create_model(c.spec, 7);
    randomize(*m);
    const auto sub = dir.file(c.name);
    cio::export_openclip(m, c.spec, sub);
    const auto images = at::randn({4, 3, c.spec.image_size, c.spec.image_size});
    const auto tokens = make_tokens(4, c.spec.context_length, c.spec.vocab_size);
    cio::save_safetensors(dir.file(c.name + "-in.safetensors"),
                          {{"images", images}, {"tokens", tokens}});
    c.ours = our_outputs(m, images, tokens);
    job["cases"].push_back({{"name", c.name},
                            {"dir", sub},
                            {"inputs", dir.file(c.name + "-in.safetensors")},
                            {"out", dir.file(c.name + "-out.safetensors")}});
  }
  // The full-size B/32, loaded by open_clip's name: with CLIPPER_INTEROP_FULL_DEPTH=1
  // (scripts/check_full_depth.sh; ~30 s more), as the full-size SigLIP checks.
  const bool full = clipper::test::interop_full_depth();
  const auto b32 = cm::load_model_spec("coca_ViT-B-32");
  std::map<std::string, at::Tensor> b32_ours;
  if (full) {
    auto m = cm::create_model(b32, 9);
    cio::export_openclip(m, b32, dir.file("b32"));
    const auto images = at::randn({2, 3, 224, 224});
    const auto tokens = make_tokens(2, b32.context_length);
    cio::save_safetensors(dir.file("b32-in.safetensors"), {{"images", images}, {"tokens", tokens}});
    at::NoGradGuard g;
    m->eval();
    const auto out = m->forward_coca(images, tokens);
    b32_ours = {{"image_features", out.image_features},
                {"text_features", out.text_features},
                {"logits", out.logits}};
  }
  if (full)
    job["named"] = {{"name", "coca_ViT-B-32"},
                    {"dir", dir.file("b32")},
                    {"inputs", dir.file("b32-in.safetensors")},
                    {"out", dir.file("b32-out.safetensors")}};

  const auto r = clipper::test::run(clipper::test::python() + " " + script() + " " +
                                    dir.write("job.json", job.dump()));
  std::cout << r.output;
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("coca interop ok"), std::string::npos);
  for (const auto& c : cases)
    expect_close(c.ours, load(dir.file(c.name + "-out.safetensors")), c.name);
  if (!full) return;
  auto theirs = load(dir.file("b32-out.safetensors"));
  std::map<std::string, at::Tensor> ours_b32;
  for (const auto& [k, v] : b32_ours) ours_b32[k] = v;
  expect_close(ours_b32, theirs, "coca_ViT-B-32 (by name)");
}

// Captions (model/caption.hpp) against open_clip's CoCa.generate on the same weights and
// pictures: greedy (generation_type top_k, top_k 1) and beam search (its defaults: 6 beams in 3
// groups, min_seq_len 5), token for token. open_clip's generate needs transformers' classes of
// before 4.56 (BeamSearchScorer): the script runs with $CLIPPER_TRANSFORMERS4 (default
// build/py-tf4, made by `pip install --target build/py-tf4 --no-deps transformers==4.46.3
// huggingface-hub==0.26.5 tokenizers==0.20.3`) first on PYTHONPATH.
TEST(CocaInterop, GreedyAndBeamCaptionsEqualOpenClips) {
  at::set_num_threads(2);
  clipper::test::TempDir dir;
  auto spec = cm::load_model_spec("tiny-coca");
  auto m = cm::create_model(spec, 21);
  randomize(*m);
  {
    at::NoGradGuard g;  // make the end of text a likely next token, so captions end early
    m->text_decoder->text_projection.select(1, kEot).mul_(4.0);
  }
  cio::export_openclip(m, spec, dir.file("tiny"));
  at::manual_seed(4);
  const auto images = at::randn({2, 3, 28, 28});
  const auto tokens = make_tokens(2, spec.context_length);
  const auto gen = at::randn({3, 3, 28, 28});
  const std::int64_t seq_len = 12;
  cio::save_safetensors(dir.file("in.safetensors"),
                        {{"images", images},
                         {"tokens", tokens},
                         {"gen_images", gen},
                         {"gen_seq_len", at::full({1}, seq_len, at::kLong)}});
  nlohmann::json job;
  job["cases"].push_back({{"name", "tiny-coca"},
                          {"dir", dir.file("tiny")},
                          {"inputs", dir.file("in.safetensors")},
                          {"out", dir.file("out.safetensors")}});
  const char* env = std::getenv("CLIPPER_TRANSFORMERS4");
  const std::string tf4 = env ? env : std::string(CLIPPER_BINARY_DIR) + "/py-tf4";
  const auto r = clipper::test::run("PYTHONPATH=" + tf4 + " " + clipper::test::python() + " " +
                                    script() + " " + dir.write("job.json", job.dump()));
  std::cout << r.output;
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto theirs = load(dir.file("out.safetensors"));

  cm::CaptionOptions greedy;
  greedy.method = cm::CaptionMethod::top_k;
  greedy.top_k = 1;
  greedy.seq_len = seq_len;
  cm::CaptionOptions beam;
  beam.seq_len = seq_len;
  for (const auto& [name, o] : {std::pair{"greedy", greedy}, std::pair{"beam", beam}}) {
    const auto ours = cm::generate_captions(*m, gen, o);
    const auto& t = theirs.at(name);
    std::cout << "[coca] " << name << " clipper:\n" << ours << "\nopen_clip:\n" << t << "\n";
    ASSERT_EQ(ours.sizes(), t.sizes()) << name;
    EXPECT_TRUE(at::equal(ours, t.to(at::kLong))) << name;
  }
}
