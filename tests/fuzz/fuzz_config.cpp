// libFuzzer harness: a YAML config applied over the defaults, then --set overrides. The input is
// a YAML document, then a line "---8<---", then one override ("a.b=value") per line. The result is
// dumped and read back, as a resumed run reads its config.yaml.
#include <cstdint>
#include <cstdio>

#include "clipper/config/config.hpp"
#include "clipper/config/loader.hpp"
#include "clipper/core/error.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string input = clipper::fuzz::bytes_of(data, size);
  const auto cut = input.find("\n---8<---\n");
  const std::string yaml = input.substr(0, cut);
  std::string overrides = cut == std::string::npos ? std::string() : input.substr(cut + 10);
  clipper::config::Config c;
  try {
    clipper::config::apply_yaml(c, yaml, "fuzz.yaml");
    while (!overrides.empty())
      clipper::config::apply_override(c, clipper::fuzz::take_line(overrides));
    clipper::config::check_required(c);
  } catch (const clipper::core::InputError&) {
  }
  clipper::config::Config back;
  try {
    clipper::config::apply_yaml(back, clipper::config::to_yaml(c), "dump.yaml");
  } catch (const clipper::core::InputError& e) {
    // A dumped config must read back: anything else is a bug in the dump.
    std::fprintf(stderr, "the dump does not read back: %s\n", e.what());
    __builtin_trap();
  }
  return 0;
}
