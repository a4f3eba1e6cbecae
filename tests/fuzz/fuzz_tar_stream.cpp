// libFuzzer harness: ShardReader::next() over arbitrary bytes as a shard file (plain tar or
// compressed: libarchive detects gzip, bzip2, xz and zstd by their magic bytes).
#include <cstdint>

#include "clipper/data/tar_stream.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto path = clipper::fuzz::write_scratch("shard.tar", clipper::fuzz::bytes_of(data, size));
  clipper::data::ShardReader reader(path);
  clipper::data::RawSample s;
  std::size_t bytes = 0;
  while (reader.next(s))
    for (const auto& [ext, b] : s.files) bytes += ext.size() + b.size();
  (void)clipper::data::to_string(reader.status());
  return bytes == static_cast<std::size_t>(-1);
}
