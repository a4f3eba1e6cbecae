#include "clipper/core/paths.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <filesystem>

namespace fs = std::filesystem;

namespace clipper::core {
namespace {

std::string executable_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : exe.parent_path().string();
}

std::string library_dir() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<const void*>(&share_dirs), &info) == 0 || !info.dli_fname) return {};
  std::error_code ec;
  const fs::path lib = fs::canonical(info.dli_fname, ec);
  return ec ? std::string() : lib.parent_path().string();
}

}  // namespace

std::vector<std::string> share_dirs() {
  std::vector<std::string> out;
  for (const auto& d : {executable_dir(), library_dir()}) {
    if (d.empty()) continue;
    const std::string s = (fs::path(d) / ".." / "share" / "clipper").lexically_normal().string();
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  }
  return out;
}

}  // namespace clipper::core
