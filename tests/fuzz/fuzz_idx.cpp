// libFuzzer harness: an IDX file read header first (`clipper shards --from-idx`). The first byte
// chooses: bit 0 labels (magic 0x801) or images (0x803); bit 1 the rest gzipped here (so that
// mutations reach the header and the stream, not the gzip's CRC). Whatever the header declares,
// no more than the limit (64 KiB here) may come back.
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "clipper/core/error.hpp"
#include "clipper/data/shard_writer.hpp"
#include "fuzz_util.hpp"

namespace {

std::string gzipped(const std::string& in) {
  z_stream z{};
  if (deflateInit2(&z, 1, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  std::string out(deflateBound(&z, in.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint32_t magic = data[0] & 1 ? 0x00000801 : 0x00000803;
  std::string rest = clipper::fuzz::bytes_of(data + 1, size - 1);
  if (data[0] & 2) rest = gzipped(rest);
  const std::string path = clipper::fuzz::write_scratch("in.idx", rest);
  constexpr std::int64_t kMax = 64 << 10;
  try {
    const auto f = clipper::data::read_idx_file(path, magic, kMax);
    std::uint64_t declared = 1;
    for (const auto d : f.dims) declared *= static_cast<std::uint64_t>(d);
    if (f.dims.size() != (magic & 0xff) || f.data.size() != declared ||
        f.data.size() + 4 + 4 * f.dims.size() > kMax) {
      std::fprintf(stderr, "read_idx_file returned %zu bytes for dims of %zu\n", f.data.size(),
                   f.dims.size());
      __builtin_trap();
    }
  } catch (const clipper::core::InputError&) {
  }
  return 0;
}
