// The Tokenizer interface's defaults: a tokenizer that cannot decode says so.
#include "clipper/tokenizer/tokenizer.hpp"

#include "clipper/core/error.hpp"

namespace clipper::tokenizer {

Tokenizer::RowIds Tokenizer::row_ids() const {
  throw core::InputError("captions decode with the 'clip' and 'sentencepiece:' tokenizers only");
}

std::string Tokenizer::caption(const std::vector<std::int64_t>&) const {
  throw core::InputError("captions decode with the 'clip' and 'sentencepiece:' tokenizers only");
}

}  // namespace clipper::tokenizer
