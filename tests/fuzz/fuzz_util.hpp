#pragma once
// Shared by the fuzz harnesses: a scratch folder per process and the input as a string.
#include <ftw.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

namespace clipper::fuzz {

inline std::string bytes_of(const std::uint8_t* data, std::size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

// A folder of this process's own (under $TMPDIR or /tmp), made once and removed at exit
// (kept when CLIPPER_FUZZ_KEEP is set).
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    const char* t = std::getenv("TMPDIR");
    std::string templ = std::string(t && *t ? t : "/tmp") + "/clipper-fuzz-XXXXXX";
    if (!::mkdtemp(templ.data())) std::abort();
    static std::string removed_at_exit;
    removed_at_exit = templ;
    if (std::getenv("CLIPPER_FUZZ_KEEP")) return templ;  // kept for a look
    std::atexit([] {
      ::nftw(
          removed_at_exit.c_str(),
          [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
          FTW_DEPTH | FTW_PHYS);
    });
    return templ;
  }();
  return dir;
}

inline std::string write_scratch(const std::string& name, const std::string& bytes) {
  const std::string path = scratch_dir() + "/" + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  return path;
}

// Splits off the part before the first '\n' (moved out of `rest`).
inline std::string take_line(std::string& rest) {
  const auto nl = rest.find('\n');
  std::string head = rest.substr(0, nl);
  rest = nl == std::string::npos ? std::string() : rest.substr(nl + 1);
  return head;
}

}  // namespace clipper::fuzz
