// libFuzzer harness: both tokenizers' encode() on arbitrary bytes (not necessarily UTF-8). The
// first byte picks the tokenizer (bit 0: SentencePiece) and the context length (bits 1-6); the
// SentencePiece model is trained once at start-up on a few captions.
#include <cstdint>
#include <fstream>
#include <map>
#include <vector>

#include "clipper/core/error.hpp"
#include "clipper/tokenizer/sentencepiece_train.hpp"
#include "clipper/tokenizer/tokenizer.hpp"
#include "fuzz_util.hpp"

namespace {

std::shared_ptr<const clipper::tokenizer::Tokenizer> tokenizer(bool sp, std::int64_t context) {
  static std::map<std::pair<bool, std::int64_t>,
                  std::shared_ptr<const clipper::tokenizer::Tokenizer>>
      made;
  static const std::string sp_model = [] {
    std::string text;
    for (int i = 0; i < 200; ++i)
      text += "a photo of a " + std::to_string(i % 17) + " cat on the mat, äöü 日本 " +
              std::to_string(i) + "\n";
    clipper::tokenizer::SentencePieceTrainOptions o;
    o.input = clipper::fuzz::write_scratch("captions.txt", text);
    o.vocab_size = 48;
    o.out_prefix = clipper::fuzz::scratch_dir() + "/sp";
    return clipper::tokenizer::train_sentencepiece(o);
  }();
  auto& t = made[{sp, context}];
  if (!t)
    t = clipper::tokenizer::make_tokenizer(sp ? "sentencepiece:" + sp_model : "clip", context);
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool sp = data[0] & 1;
  const std::int64_t context = 2 + ((data[0] >> 1) & 63);
  const auto t = tokenizer(sp, context);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(context), -1);
  t->encode(std::string_view(reinterpret_cast<const char*>(data + 1), size - 1), ids.data());
  for (const auto id : ids)
    if (id < 0 || id >= t->vocab_size()) __builtin_trap();
  return 0;
}
