// libFuzzer harness: shard list parsing (braces, "::" sources, weights on the second line) and
// brace expansion, whose size is bounded.
#include <cstdint>

#include "clipper/core/error.hpp"
#include "clipper/data/shard_list.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string input = clipper::fuzz::bytes_of(data, size);
  const std::string spec = clipper::fuzz::take_line(input);
  std::vector<double> weights;
  for (const char c : input)
    if (c >= '0' && c <= '9') weights.push_back(c - '0');
  try {
    clipper::data::expand_braces(spec);
  } catch (const clipper::core::InputError&) {
  }
  try {
    const auto list = clipper::data::parse_shard_list(spec, weights);
    (void)list.total_size();
  } catch (const clipper::core::InputError&) {
  }
  return 0;
}
