// The protobuf wire format, as far as sp_proto.hpp needs it: varints and length-delimited fields.
#include "sp_proto.hpp"

#include <cstdint>
#include <string_view>

namespace clipper::tokenizer::detail {
namespace {

constexpr std::uint64_t kLengthDelimited = 2;

// Reads a protobuf varint at `p`; false at the end of the bytes or on a malformed one.
bool read_varint(std::string_view b, std::size_t& p, std::uint64_t& v) {
  v = 0;
  for (int shift = 0; p < b.size() && shift < 64; shift += 7) {
    const auto c = static_cast<unsigned char>(b[p++]);
    v |= static_cast<std::uint64_t>(c & 0x7F) << shift;
    if (!(c & 0x80)) return true;
  }
  return false;
}

// Skips a field of wire type `wire`; false if the bytes end first or the type is unknown.
bool skip_field(std::string_view b, std::size_t& p, std::uint64_t wire) {
  std::uint64_t n = 0;
  switch (wire) {
    case 0:
      return read_varint(b, p, n);
    case 1:
      n = 8;
      break;
    case kLengthDelimited:
      if (!read_varint(b, p, n)) return false;
      break;
    case 5:
      n = 4;
      break;
    default:
      return false;
  }
  if (n > b.size() - p) return false;
  p += n;
  return true;
}

// Calls fn(body) for each length-delimited field numbered `field` of message `b`, in order.
template <class Fn>
void for_each_message(std::string_view b, std::uint64_t field, Fn&& fn) {
  std::uint64_t key = 0;
  for (std::size_t p = 0; p < b.size() && read_varint(b, p, key);) {
    if (key != ((field << 3) | kLengthDelimited)) {
      if (!skip_field(b, p, key & 7)) return;
      continue;
    }
    std::uint64_t n = 0;
    if (!read_varint(b, p, n) || n > b.size() - p) return;
    fn(b.substr(p, n));
    p += n;
  }
}

// The type of one ModelProto.SentencePiece message (field 3; NORMAL = 1 when absent).
std::uint64_t piece_type(std::string_view b) {
  std::uint64_t type = 1, key = 0;
  for (std::size_t p = 0; p < b.size() && read_varint(b, p, key);) {
    if (key == (3 << 3)) {
      if (!read_varint(b, p, type)) break;
    } else if (!skip_field(b, p, key & 7)) {
      break;
    }
  }
  return type;
}

}  // namespace

// ModelProto field 1 holds the pieces in id order; type 4 is USER_DEFINED.
std::vector<int> user_defined_ids(const std::string& model_proto) {
  std::vector<int> out;
  int id = 0;
  for_each_message(model_proto, 1, [&](std::string_view piece) {
    if (piece_type(piece) == 4) out.push_back(id);
    ++id;
  });
  return out;
}

// ModelProto field 3 is the NormalizerSpec; its field 2 the precompiled character map.
std::string precompiled_charsmap(const std::string& model_proto) {
  std::string out;
  for_each_message(model_proto, 3, [&](std::string_view spec) {
    for_each_message(spec, 2, [&](std::string_view map) { out = std::string(map); });
  });
  return out;
}

}  // namespace clipper::tokenizer::detail
