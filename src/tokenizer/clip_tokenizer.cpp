// The "clip" tokenizer: cleaning, pre-tokens, byte-level BPE, open_clip.tokenize's row layout.
#include <memory>
#include <mutex>
#include <vector>

#include "clip_bpe.hpp"
#include "clip_clean_steps.hpp"
#include "clip_pretokenize.hpp"
#include "clipper/tokenizer/clip_decode.hpp"
#include "layout.hpp"
#include "utf8.hpp"

namespace clipper::tokenizer::detail {
namespace {

class ClipTokenizer final : public Tokenizer {
 public:
  ClipTokenizer(const std::string& vocab_path, std::int64_t context_length)
      : bpe_(vocab_path), vocab_path_(vocab_path), context_length_(context_length) {}

  void encode(std::string_view text, std::int64_t* out) const override {
    const std::u32string clean = clip_clean(utf8_to_u32(text));
    // Only the first context_length tokens can reach the row; stop once they are there.
    const auto limit = static_cast<std::size_t>(context_length_);
    std::vector<Span> pieces;
    clip_pretokenize(clean, pieces, limit);
    std::vector<std::int64_t> ids;
    ids.reserve(limit + 8);
    std::string bytes;
    for (const Span& p : pieces) {
      bytes.clear();
      for (std::size_t i = p.begin; i < p.end; ++i) append_utf8(bytes, clean[i]);
      bpe_.encode_piece(bytes, ids);
      if (ids.size() >= limit) break;
    }
    write_row(bpe_.start_id(), ids, bpe_.end_id(), 0, context_length_, out);
  }
  std::int64_t context_length() const override { return context_length_; }
  std::int64_t vocab_size() const override { return bpe_.vocab_size(); }
  RowIds row_ids() const override { return {bpe_.start_id(), bpe_.end_id(), 0}; }
  // The decoder reads the vocabulary again, once, when a caption is first decoded: encoding
  // (every worker's tokenizer) never pays for it.
  std::string caption(const std::vector<std::int64_t>& row) const override {
    std::call_once(decoder_once_, [this] {
      decoder_ = std::make_unique<ClipDecoder>(read_clip_vocabulary(vocab_path_));
    });
    return decoder_->caption(row);
  }

 private:
  ClipBpe bpe_;
  std::string vocab_path_;
  mutable std::once_flag decoder_once_;
  mutable std::unique_ptr<ClipDecoder> decoder_;
  std::int64_t context_length_;
};

}  // namespace

std::shared_ptr<const Tokenizer> make_clip_tokenizer(const std::string& vocab_path,
                                                     std::int64_t context_length) {
  return std::make_shared<ClipTokenizer>(vocab_path, context_length);
}

}  // namespace clipper::tokenizer::detail
