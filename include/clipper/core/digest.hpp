#pragma once
// Size and CRC-32 of bytes as they are written, so a checkpoint's manifest never needs a second
// read of what was just saved.
#include <cstddef>
#include <cstdint>
#include <string>

namespace clipper::core {

struct FileDigest {
  std::uint64_t size = 0;
  std::uint32_t crc32 = 0;
  bool operator==(const FileDigest& o) const { return size == o.size && crc32 == o.crc32; }
  bool operator<(const FileDigest& o) const {
    return size != o.size ? size < o.size : crc32 < o.crc32;
  }
};

class Crc32 {
 public:
  void update(const void* data, std::size_t size);
  FileDigest digest() const { return {size_, crc_}; }

 private:
  std::uint64_t size_ = 0;
  std::uint32_t crc_ = 0;
};

// Streams the file once; throws InputError naming it when it cannot be read.
FileDigest digest_of_file(const std::string& path);

}  // namespace clipper::core
