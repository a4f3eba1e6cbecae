#include "clipper/core/digest.hpp"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "clipper/core/error.hpp"

namespace clipper::core {

void Crc32::update(const void* data, std::size_t size) {
  const auto* p = static_cast<const Bytef*>(data);
  size_ += size;
  while (size > 0) {  // zlib takes 32-bit lengths
    const auto n = static_cast<uInt>(std::min<std::size_t>(size, 1u << 30));
    crc_ = static_cast<std::uint32_t>(crc32(crc_, p, n));
    p += n;
    size -= n;
  }
}

FileDigest digest_of_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("cannot read '" + path + "': " + std::strerror(errno));
  std::vector<char> buf(1 << 20);
  Crc32 crc;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (in.gcount() > 0) crc.update(buf.data(), static_cast<std::size_t>(in.gcount()));
  }
  return crc.digest();
}

}  // namespace clipper::core
