#include "clipper/tokenizer/clip_decode.hpp"

#include <array>

#include "clipper/core/error.hpp"

namespace clipper::tokenizer {
namespace {

constexpr std::int64_t kSot = 49406, kEot = 49407;

// bytes_to_unicode inverted: code point -> byte. The printable bytes stand for themselves; the
// others, in byte order, for 256, 257, ...
std::array<int, 512> unicode_to_byte() {
  std::array<int, 512> map{};
  map.fill(-1);
  auto printable = [](int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  };
  int next = 256;
  for (int b = 0; b < 256; ++b) map[printable(b) ? b : next++] = b;
  return map;
}

// The code points of a UTF-8 string (the vocabulary's strings are valid UTF-8).
std::vector<std::uint32_t> code_points(const std::string& s) {
  std::vector<std::uint32_t> out;
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const int n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    std::uint32_t cp = n == 1 ? c : c & (0x3F >> (n - 1));
    for (int k = 1; k < n && i + k < s.size(); ++k)
      cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    out.push_back(cp);
    i += n;
  }
  return out;
}

}  // namespace

ClipDecoder::ClipDecoder(ClipVocabulary vocab) : vocab_(std::move(vocab)) {}

std::string ClipDecoder::decode(const std::vector<std::int64_t>& ids) const {
  static const auto to_byte = unicode_to_byte();
  std::string joined;
  for (const auto id : ids) {
    if (id < 0 || id >= static_cast<std::int64_t>(vocab_.tokens.size()))
      throw core::InputError("token id " + std::to_string(id) +
                             " is outside the CLIP vocabulary (" +
                             std::to_string(vocab_.tokens.size()) + " ids)");
    joined += vocab_.tokens[static_cast<std::size_t>(id)];
  }
  std::string bytes;
  for (std::size_t pos = 0; pos < joined.size();) {
    if (joined.compare(pos, 4, "</w>") == 0) {
      bytes += ' ';
      pos += 4;
      continue;
    }
    std::size_t end = pos + 1;
    while (end < joined.size() && (static_cast<unsigned char>(joined[end]) & 0xC0) == 0x80) ++end;
    const auto cp = code_points(joined.substr(pos, end - pos));
    if (!cp.empty() && cp[0] < to_byte.size() && to_byte[cp[0]] >= 0)
      bytes += static_cast<char>(to_byte[cp[0]]);
    else
      bytes += joined.substr(pos, end - pos);  // <start_of_text>'s letters and the like
    pos = end;
  }
  return bytes;
}

std::string ClipDecoder::caption(const std::vector<std::int64_t>& ids) const {
  std::vector<std::int64_t> body;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i == 0 && ids[i] == kSot) continue;
    if (ids[i] == kEot || ids[i] == 0) break;
    body.push_back(ids[i]);
  }
  auto text = decode(body);
  const auto first = text.find_first_not_of(' ');
  if (first == std::string::npos) return "";
  return text.substr(first, text.find_last_not_of(' ') - first + 1);
}

}  // namespace clipper::tokenizer
