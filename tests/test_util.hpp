#pragma once
// Helpers shared by the test suites: temporary folders, files and running the clipper binary.
#include <ftw.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "clipper/core/error.hpp"

namespace clipper::test {

// A fresh folder under the system temp dir, removed when the object goes away.
class TempDir {
 public:
  TempDir() {
    std::string templ = (std::filesystem::temp_directory_path() / "clipper-test-XXXXXX").string();
    path_ = ::mkdtemp(templ.data());
  }
  // Not std::filesystem::remove_all: libtorch.so (PyPI wheel) exports its own, broken copy of
  // the std::filesystem functions, which interposes in every Torch-linked test and crashes.
  ~TempDir() {
    ::nftw(
        path_.c_str(),
        [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
        FTW_DEPTH | FTW_PHYS);
  }
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string write(const std::string& name, const std::string& text) const {
    const auto p = path_ / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }

 private:
  std::filesystem::path path_;
};

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs a shell command line, capturing its output and exit code.
inline RunResult run(const std::string& command) {
  RunResult r;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// The clipper executable under test (env CLIPPER_BIN overrides the build tree's).
inline std::string clipper_bin() {
  if (const char* b = std::getenv("CLIPPER_BIN")) return b;
  return CLIPPER_DEFAULT_BIN;
}

inline std::string source_path(const std::string& rel) {
  return std::string(CLIPPER_SOURCE_DIR) + "/" + rel;
}

}  // namespace clipper::test

namespace clipper::test {
// The venv Python with torch and the third-party clients (open_clip, webdataset, ...).
inline std::string python() {
  if (const char* p = std::getenv("CLIPPER_PYTHON")) return p;
  return CLIPPER_DEFAULT_PYTHON;
}
}  // namespace clipper::test

namespace clipper::test {
// The message of the InputError that `f` throws, or "(no error)".
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const core::InputError& e) {
    return e.what();
  }
  return "(no error)";
}
}  // namespace clipper::test
