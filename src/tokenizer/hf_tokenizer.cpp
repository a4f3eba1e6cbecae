// The "hf:" tokenizer: open_clip's HFTokenizer on a SigLIP (T5Tokenizer) or SigLIP 2
// (GemmaTokenizer) folder. The text is cleaned, the added tokens are split out of it (as
// transformers' AddedVocabulary does: leftmost, longest), each piece in between goes through
// libsentencepiece (the same pieces as transformers' Unigram / BPE conversion of the model), then
// the special ids, truncation and padding of the folder. T5 folders go through tokenizers' own
// Unigram pipeline (hf_unigram.hpp), where libsentencepiece's ties and normalization differ.
#include <sentencepiece_processor.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "clipper/core/error.hpp"
#include "clipper/tokenizer/text_clean.hpp"
#include "hf_folder.hpp"
#include "hf_special.hpp"
#include "hf_unigram.hpp"
#include "layout.hpp"

namespace clipper::tokenizer::detail {
namespace {

// The added tokens as a byte trie: the longest one that starts at a position.
class TokenTrie {
 public:
  explicit TokenTrie(const std::map<std::string, std::int64_t>& tokens) : nodes_(1) {
    for (const auto& [text, id] : tokens) insert(text, id);
  }

  // {length, id} of the longest token at text[pos...], {0, -1} if none.
  std::pair<std::size_t, std::int64_t> longest(std::string_view text, std::size_t pos) const {
    std::pair<std::size_t, std::int64_t> best{0, -1};
    int node = 0;
    for (std::size_t i = pos; i < text.size(); ++i) {
      node = child(node, static_cast<unsigned char>(text[i]));
      if (node < 0) break;
      if (nodes_[node].id >= 0) best = {i + 1 - pos, nodes_[node].id};
    }
    return best;
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int>> next;
    std::int64_t id = -1;
  };

  int child(int node, unsigned char c) const {
    for (const auto& [b, n] : nodes_[node].next)
      if (b == c) return n;
    return -1;
  }

  void insert(const std::string& text, std::int64_t id) {
    int node = 0;
    for (unsigned char c : text) {
      int n = child(node, c);
      if (n < 0) {
        n = static_cast<int>(nodes_.size());
        nodes_[node].next.emplace_back(c, n);
        nodes_.emplace_back();
      }
      node = n;
    }
    nodes_[node].id = id;
  }

  std::vector<Node> nodes_;
};

class HfTokenizer final : public Tokenizer {
 public:
  HfTokenizer(const std::string& dir, std::int64_t context_length, TextClean clean)
      : folder_(read_hf_folder(dir)), context_length_(context_length), clean_(clean) {
    const auto status = sp_.Load(folder_.model_path);
    if (!status.ok())
      throw core::InputError("cannot load the SentencePiece model " + folder_.model_path + ": " +
                             status.ToString());
    specials_ = read_hf_specials(folder_, sp_);
    trie_ = std::make_unique<TokenTrie>(specials_.added);
    if (folder_.kind == HfKind::t5) unigram_ = std::make_unique<HfUnigram>(sp_, folder_.model_path);
    const auto n_special =
        static_cast<std::int64_t>(specials_.prefix.size() + specials_.suffix.size());
    core::require(context_length >= n_special,
                  "tokenizer hf:" + dir + ": context length " + std::to_string(context_length) +
                      " cannot hold its " + std::to_string(n_special) + " special ids");
  }

  void encode(std::string_view text, std::int64_t* out) const override {
    std::vector<std::int64_t> ids = text_ids(clean_text(text, clean_));
    const auto room = static_cast<std::size_t>(
        context_length_ -
        static_cast<std::int64_t>(specials_.prefix.size() + specials_.suffix.size()));
    if (ids.size() > room) {  // truncation=True: the text's ids only, the special ones stay
      if (specials_.truncate_left)
        ids.erase(ids.begin(), ids.end() - static_cast<std::ptrdiff_t>(room));
      else
        ids.resize(room);
    }
    std::vector<std::int64_t> row = specials_.prefix;
    row.insert(row.end(), ids.begin(), ids.end());
    row.insert(row.end(), specials_.suffix.begin(), specials_.suffix.end());
    const std::size_t pad = static_cast<std::size_t>(context_length_) - row.size();
    std::int64_t* at = out;
    if (specials_.pad_left) at = std::fill_n(at, pad, specials_.pad);
    at = std::copy(row.begin(), row.end(), at);
    if (!specials_.pad_left) std::fill_n(at, pad, specials_.pad);
  }
  std::int64_t context_length() const override { return context_length_; }
  std::int64_t vocab_size() const override { return specials_.vocab_size; }

 private:
  // Added tokens split out first; SentencePiece encodes each stretch between them on its own.
  std::vector<std::int64_t> text_ids(const std::string& text) const {
    std::vector<std::int64_t> ids;
    std::size_t start = 0;
    const auto flush = [&](std::size_t end) {
      if (end <= start) return;
      if (unigram_) {
        unigram_->encode(std::string_view(text).substr(start, end - start), ids);
        return;
      }
      std::vector<int> pieces;
      const auto status = sp_.Encode(text.substr(start, end - start), &pieces);
      if (!status.ok()) throw core::Error("SentencePiece encode: " + status.ToString());
      ids.insert(ids.end(), pieces.begin(), pieces.end());
    };
    for (std::size_t i = 0; i < text.size();) {
      const auto [len, id] = trie_->longest(text, i);
      if (len == 0) {
        ++i;
        continue;
      }
      flush(i);
      ids.push_back(id);
      i += len;
      start = i;
    }
    flush(text.size());
    return ids;
  }

  HfFolder folder_;
  sentencepiece::SentencePieceProcessor sp_;
  HfSpecials specials_;
  std::unique_ptr<TokenTrie> trie_;
  std::unique_ptr<HfUnigram> unigram_;  // T5 folders: tokenizers' pipeline, not libsentencepiece's
  std::int64_t context_length_;
  TextClean clean_;
};

}  // namespace

std::shared_ptr<const Tokenizer> make_hf_tokenizer(const std::string& dir,
                                                   std::int64_t context_length, TextClean clean) {
  return std::make_shared<HfTokenizer>(dir, context_length, clean);
}

}  // namespace clipper::tokenizer::detail
