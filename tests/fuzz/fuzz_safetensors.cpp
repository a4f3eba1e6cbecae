// libFuzzer harness: load_safetensors on arbitrary bytes (the in-memory reader is the file
// reader with another source), with a small tensor limit so no input allocates much.
#include <cstdint>

#include "clipper/core/error.hpp"
#include "clipper/io/safetensors.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    std::map<std::string, std::string> meta;
    clipper::io::load_safetensors_bytes(clipper::fuzz::bytes_of(data, size), "fuzz.safetensors",
                                        &meta, std::uint64_t{1} << 24);
  } catch (const clipper::core::InputError&) {
  }
  return 0;
}
