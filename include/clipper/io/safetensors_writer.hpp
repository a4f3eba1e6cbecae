#pragma once
// A safetensors file written tensor by tensor (safetensors.hpp's format): the header first, from
// the names, dtypes and shapes alone, then each tensor's bytes as it comes, so a writer never
// holds more than the tensor it is given (an export streamed out of sharded parameters).
// Atomic as save_safetensors: a temporary file, fsync and rename at commit(); a writer destroyed
// before commit() removes its temporary file.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "clipper/core/digest.hpp"

namespace clipper::io {

struct SafetensorsEntry {
  std::string name;
  at::ScalarType dtype;
  std::vector<std::int64_t> shape;
};

class SafetensorsWriter {
 public:
  // Writes the header of `entries` (in this order; names unique). InputError for a bad name or a
  // dtype safetensors cannot hold.
  SafetensorsWriter(std::string path, const std::vector<SafetensorsEntry>& entries,
                    const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // The next entry's tensor (any device and layout; its dtype and shape must be the entry's).
  void write(const at::Tensor& tensor);
  // Every entry written: fsync, rename into place; the size and CRC-32 of the file.
  core::FileDigest commit();

 private:
  std::string path_, tmp_;
  std::vector<SafetensorsEntry> entries_;
  std::size_t next_ = 0;
  int fd_ = -1;
  core::Crc32 crc_;
  void put(const void* data, std::size_t size);
};

}  // namespace clipper::io
