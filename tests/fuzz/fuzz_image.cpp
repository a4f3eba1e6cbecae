// libFuzzer harness: image decode and the train / eval transforms. The first byte picks the
// transform (bit 0: train), the output size (bits 1-3) and whether grey is kept (bit 4); the rest
// is the image. The pixel limit is small so that a header claiming a huge image is refused.
#include <cstdint>
#include <vector>

#include "clipper/data/image.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t mode = data[0];
  const std::string bytes = clipper::fuzz::bytes_of(data + 1, size - 1);
  clipper::data::TransformSpec spec;
  spec.train = mode & 1;
  spec.size = 4 + 4 * ((mode >> 1) & 7);
  clipper::data::ImageProcessor p(spec, std::int64_t{1} << 22);
  std::vector<std::uint8_t> out(static_cast<std::size_t>(spec.size) * spec.size * 3);
  std::string why;
  p.process(bytes, mode, out.data(), &why);
  clipper::data::Image img;
  if (p.decode(bytes, &img, &why, (mode >> 4) & 1) == clipper::data::ImageError::none) {
    const auto small = clipper::data::resize_shorter_side(img, 8);
    if (small.pixels.size() !=
        static_cast<std::size_t>(small.width) * small.height * small.channels)
      __builtin_trap();
  }
  int w = 0, h = 0;
  clipper::data::peek_size(bytes, &w, &h);
  return 0;
}
