#include "png_chunks.hpp"

#include <array>
#include <cctype>
#include <cstdint>
#include <cstring>

namespace clipper::data::detail {
namespace {

constexpr char kSignature[] = "\x89PNG\r\n\x1a\n";
constexpr std::size_t kSignatureBytes = 8;

bool is_png(const std::string& b) {
  return b.size() >= kSignatureBytes && std::memcmp(b.data(), kSignature, kSignatureBytes) == 0;
}

std::uint32_t be32(const std::string& b, std::size_t at) {
  const auto* p = reinterpret_cast<const unsigned char*>(b.data()) + at;
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         p[3];
}

bool noisy(const char* type) {
  static const char* const kTypes[] = {"iCCP", "sRGB", "cHRM", "tEXt", "zTXt", "iTXt", "tIME"};
  for (const char* t : kTypes)
    if (std::memcmp(type, t, 4) == 0) return true;
  return false;
}

// Calls f(offset, total_chunk_bytes, type) for each whole chunk; false on a damaged layout.
template <class F>
bool for_each_chunk(const std::string& b, F&& f) {
  std::size_t at = kSignatureBytes;
  while (at + 12 <= b.size()) {
    const std::uint64_t len = be32(b, at);
    const std::uint64_t total = len + 12;  // length, type, data, CRC
    if (at + total > b.size()) return false;
    const char* type = b.data() + at + 4;
    f(at, static_cast<std::size_t>(total), type);
    if (std::memcmp(type, "IEND", 4) == 0) return true;
    at += static_cast<std::size_t>(total);
  }
  return at == b.size();
}

std::uint32_t crc32(const char* data, std::size_t n) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i)
    c = table[(c ^ static_cast<unsigned char>(data[i])) & 0xFF] ^ (c >> 8);
  return ~c;
}

std::string type_name(const std::string& b, std::size_t at) {
  std::string t = b.substr(at + 4, 4);
  for (char& c : t)
    if (!std::isalpha(static_cast<unsigned char>(c))) c = '?';
  return t;
}

}  // namespace

std::string png_damage(const std::string& b) {
  if (!is_png(b)) return {};
  const std::string total = std::to_string(b.size()) + " bytes";
  std::size_t at = kSignatureBytes;
  for (bool first = true;; first = false) {
    if (at + 12 > b.size())
      return "PNG data ends " +
             std::string(at == b.size() ? "before the IEND chunk" : "inside a chunk header") +
             " (" + total + ")";
    const std::string type = type_name(b, at);
    if (first && type != "IHDR") return "PNG data does not start with an IHDR chunk";
    const std::uint64_t len = be32(b, at);
    if (at + 12 + len > b.size())
      return "PNG data ends inside chunk " + type + " (" + total + ", the chunk needs " +
             std::to_string(at + 12 + len) + ")";
    const auto crc = be32(b, at + 8 + static_cast<std::size_t>(len));
    if (crc32(b.data() + at + 4, static_cast<std::size_t>(len) + 4) != crc)
      return "PNG chunk " + type + " at byte " + std::to_string(at) + " fails its CRC check";
    if (type == "IEND") return {};
    at += static_cast<std::size_t>(len) + 12;
  }
}

bool png_has_noisy_chunks(const std::string& bytes) {
  if (!is_png(bytes)) return false;
  bool found = false;
  for_each_chunk(bytes,
                 [&](std::size_t, std::size_t, const char* type) { found = found || noisy(type); });
  return found;
}

std::string png_without_noisy_chunks(const std::string& bytes) {
  if (!is_png(bytes)) return bytes;
  std::string out(bytes.data(), kSignatureBytes);
  out.reserve(bytes.size());
  std::size_t end = kSignatureBytes;
  const bool whole = for_each_chunk(bytes, [&](std::size_t at, std::size_t n, const char* type) {
    if (!noisy(type)) out.append(bytes, at, n);
    end = at + n;
  });
  if (!whole) return bytes;
  out.append(bytes, end, std::string::npos);  // anything after IEND, as it was
  return out;
}

}  // namespace clipper::data::detail
