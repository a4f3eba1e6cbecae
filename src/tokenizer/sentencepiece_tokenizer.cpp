// The "sentencepiece:PATH" tokenizer: clean_caption, SentencePiece ids, open_clip's row layout.
#include <sentencepiece_processor.h>

#include <memory>
#include <vector>

#include "clipper/core/error.hpp"
#include "clipper/tokenizer/sentencepiece_train.hpp"
#include "layout.hpp"

namespace clipper::tokenizer::detail {
namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& path, std::int64_t context_length)
      : context_length_(context_length) {
    const auto status = sp_.Load(path);
    if (!status.ok())
      throw core::InputError("cannot load the SentencePiece model " + path + ": " +
                             status.ToString());
    start_ = sp_.bos_id();  // < 0: the model has no start piece and rows start with a token
    end_ = sp_.eos_id();
    pad_ = sp_.pad_id() >= 0 ? sp_.pad_id() : 0;
    core::require(end_ >= 0, "SentencePiece model " + path +
                                 " has no end-of-sentence piece (eos_id < 0); the text tower "
                                 "needs one to find the end of a caption");
  }

  void encode(std::string_view text, std::int64_t* out) const override {
    std::vector<int> pieces;
    const auto status = sp_.Encode(clean_caption(text), &pieces);
    if (!status.ok()) throw core::Error("SentencePiece encode: " + status.ToString());
    std::vector<std::int64_t> ids(pieces.begin(), pieces.end());
    write_row(start_, ids, end_, pad_, context_length_, out);
  }
  std::int64_t context_length() const override { return context_length_; }
  std::int64_t vocab_size() const override { return sp_.GetPieceSize(); }

 private:
  sentencepiece::SentencePieceProcessor sp_;
  std::int64_t context_length_;
  std::int64_t start_ = -1, end_ = -1, pad_ = 0;
};

}  // namespace

std::shared_ptr<const Tokenizer> make_sentencepiece_tokenizer(const std::string& model_path,
                                                              std::int64_t context_length) {
  return std::make_shared<SentencePieceTokenizer>(model_path, context_length);
}

}  // namespace clipper::tokenizer::detail
