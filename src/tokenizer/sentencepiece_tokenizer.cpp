// The "sentencepiece:PATH" tokenizer: clean_caption, SentencePiece ids, open_clip's row layout.
#include <sentencepiece_processor.h>

#include <memory>
#include <vector>

#include "clipper/core/error.hpp"
#include "clipper/core/text.hpp"
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
    // The end id is one past the model's pieces, so that it is the largest id of every row, as
    // CLIP's <end_of_text> is: the text tower finds the end of a caption with argmax.
    end_ = sp_.GetPieceSize();
    pad_ = sp_.pad_id() >= 0 ? sp_.pad_id() : 0;
  }

  void encode(std::string_view text, std::int64_t* out) const override {
    std::vector<int> pieces;
    const auto status = sp_.Encode(clean_caption(text), &pieces);
    if (!status.ok()) throw core::Error("SentencePiece encode: " + status.ToString());
    std::vector<std::int64_t> ids(pieces.begin(), pieces.end());
    write_row(start_, ids, end_, pad_, context_length_, out);
  }
  std::int64_t context_length() const override { return context_length_; }
  std::int64_t vocab_size() const override { return end_ + 1; }
  RowIds row_ids() const override {
    if (start_ < 0)
      throw core::InputError(
          "the SentencePiece model has no start piece (<s>): generated "
          "captions need one");
    return {start_, end_, pad_};
  }
  std::string caption(const std::vector<std::int64_t>& row) const override {
    std::vector<int> pieces;
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (i == 0 && row[i] == start_) continue;
      if (row[i] == end_ || row[i] == pad_) break;
      if (row[i] < 0 || row[i] >= end_)
        throw core::InputError("token id " + std::to_string(row[i]) +
                               " is outside the SentencePiece model (" + std::to_string(end_) +
                               " pieces)");
      pieces.push_back(static_cast<int>(row[i]));
    }
    std::string text;
    const auto status = sp_.Decode(pieces, &text);
    if (!status.ok()) throw core::Error("SentencePiece decode: " + status.ToString());
    return core::trim(text);
  }

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
