#pragma once
// Private to src/tokenizer: the two facts of a serialized SentencePiece ModelProto that
// libsentencepiece 0.1.x does not expose (the pieces' USER_DEFINED type, the normalizer's
// precompiled character map), read straight from the protobuf wire format.
#include <string>
#include <vector>

namespace clipper::tokenizer::detail {

// The ids of the model's USER_DEFINED pieces, in id order.
std::vector<int> user_defined_ids(const std::string& model_proto);

// NormalizerSpec.precompiled_charsmap (the rule table the nmt_nfkc normalizer compiles to), ""
// when the model has none (identity normalization).
std::string precompiled_charsmap(const std::string& model_proto);

}  // namespace clipper::tokenizer::detail
