#include "clipper/core/atomic_file.hpp"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "clipper/core/digest.hpp"
#include "clipper/core/error.hpp"

namespace clipper::core {
namespace {

std::string sys_error(const std::string& what, const std::string& path) {
  return what + " '" + path + "': " + std::strerror(errno);
}

}  // namespace

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw Error(sys_error("cannot open for fsync", path));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0 && errno != EINVAL) throw Error(sys_error("fsync failed for", path));
}

void make_private_dirs(const std::string& path) {
  std::string prefix;
  std::size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    prefix = path.substr(0, pos);
    if (prefix.empty() || prefix == "." || prefix == "..") continue;
    if (::mkdir(prefix.c_str(), 0750) != 0 && errno != EEXIST)
      throw Error(sys_error("cannot create the folder", prefix));
  }
}

FileDigest write_file_atomic(const std::string& path, std::string_view bytes) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  fs::create_directories(dir);
  const std::string tmp =
      (dir / ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()))).string();
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(sys_error("cannot create", tmp));
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string msg = sys_error("cannot write", tmp);
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error(msg);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const std::string msg = sys_error("fsync failed for", tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    throw Error(msg);
  }
  ::close(fd);
  rename_durable(tmp, path);
  Crc32 crc;
  crc.update(bytes.data(), bytes.size());
  return crc.digest();
}

void exchange_durable(const std::string& a, const std::string& b) {
  if (::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) != 0)
    throw Error(sys_error("cannot exchange '" + a + "' with", b));
  const std::filesystem::path p(b);
  fsync_path(p.has_parent_path() ? p.parent_path().string() : ".");
}

void rename_durable(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    const std::string msg = sys_error("cannot rename '" + from + "' to", to);
    throw Error(msg);
  }
  const std::filesystem::path p(to);
  fsync_path(p.has_parent_path() ? p.parent_path().string() : ".");
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("cannot read '" + path + "': " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace clipper::core
