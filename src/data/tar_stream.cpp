#include "clipper/data/tar_stream.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <thread>

extern char** environ;

namespace clipper::data {

const std::string* RawSample::find(const std::string& ext) const {
  for (const auto& [e, bytes] : files)
    if (e == ext) return &bytes;
  return nullptr;
}

const char* to_string(ShardStatus s) {
  switch (s) {
    case ShardStatus::ok:
      return "ok";
    case ShardStatus::unreadable:
      return "unreadable";
    case ShardStatus::truncated:
      return "truncated";
    case ShardStatus::pipe_failed:
      return "pipe_failed";
  }
  return "?";
}

bool split_key(const std::string& name, std::string* key, std::string* ext) {
  const auto slash = name.rfind('/');
  const std::size_t base = slash == std::string::npos ? 0 : slash + 1;
  const auto dot = name.find('.', base);
  if (dot == std::string::npos || dot == base) return false;  // WebDataset: [^.]+ before the dot
  *key = name.substr(0, dot);
  *ext = name.substr(dot + 1);
  for (auto& c : *ext)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return true;
}

namespace {

// gzip, bzip2, xz and zstd, each only when libarchive has its library built in: libarchive would
// otherwise run an external program (or, with filter_all, also lzip, lz4, uudecode, rpm, ...)
// on bytes from a shard.
void support_filters(archive* ar) {
  if (archive_zlib_version()) archive_read_support_filter_gzip(ar);
  if (archive_bzlib_version()) archive_read_support_filter_bzip2(ar);
  if (archive_liblzma_version()) archive_read_support_filter_xz(ar);
  if (archive_libzstd_version()) archive_read_support_filter_zstd(ar);
}

// Starts `sh -c cmd` with its stdout into a pipe, stdin from /dev/null and a process group of its
// own: a terminal's Ctrl-C (a SIGINT to clipper's group) reaches clipper, which stops at a step,
// saves, and ends the command itself. Returns the pipe's read end, or -1 with errno set.
int spawn_pipe(const std::string& cmd, int& pid) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return -1;
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_adddup2(&files, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&files, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none, deflt;
  sigemptyset(&none);
  sigemptyset(&deflt);
  for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGUSR1}) sigaddset(&deflt, sig);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &deflt);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::string sh = "sh", dash_c = "-c", command = cmd;
  char* argv[] = {sh.data(), dash_c.data(), command.data(), nullptr};
  pid_t child = -1;
  const int rc = ::posix_spawn(&child, "/bin/sh", &files, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&files);
  posix_spawnattr_destroy(&attr);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    errno = rc;
    return -1;
  }
  pid = child;
  return fds[0];
}

// Waits for a pipe: command; `end` first sends its group SIGTERM, then SIGKILL after 2 s.
int reap_pipe(int pid, bool end) {
  int st = 0;
  if (!end) return ::waitpid(pid, &st, 0) == pid ? st : -1;
  ::kill(-pid, SIGTERM);
  for (int i = 0; i < 100; ++i) {
    if (::waitpid(pid, &st, WNOHANG) == pid) return st;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(-pid, SIGKILL);
  return ::waitpid(pid, &st, 0) == pid ? st : -1;
}

}  // namespace

std::size_t RawSample::bytes() const {
  std::size_t n = key.size();
  for (const auto& [e, b] : files) n += e.size() + b.size();
  return n;
}

ShardReader::ShardReader(std::string url, std::int64_t max_sample_bytes)
    : url_(std::move(url)), max_sample_bytes_(max_sample_bytes) {}

ShardReader::~ShardReader() {
  close();
}

void ShardReader::fail(ShardStatus s, std::string what) {
  if (status_ == ShardStatus::ok) {
    status_ = s;
    error_ = std::move(what);
  }
  done_ = true;
}

void ShardReader::open() {
  opened_ = true;
  ar_ = archive_read_new();
  support_filters(ar_);
  archive_read_support_format_tar(ar_);
  int rc;
  if (url_.rfind("pipe:", 0) == 0) {
    pipe_fd_ = spawn_pipe(url_.substr(5), pipe_pid_);
    if (pipe_fd_ < 0) {
      fail(ShardStatus::pipe_failed,
           std::string("cannot start the command: ") + std::strerror(errno));
      return;
    }
    rc = archive_read_open_fd(ar_, pipe_fd_, 1 << 16);
  } else {
    rc = archive_read_open_filename(ar_, url_.c_str(), 1 << 16);
  }
  if (rc != ARCHIVE_OK)
    fail(ShardStatus::unreadable,
         archive_error_string(ar_) ? archive_error_string(ar_) : "cannot open");
}

void ShardReader::close() {
  if (ar_) {
    archive_read_free(ar_);
    ar_ = nullptr;
  }
  if (pipe_fd_ >= 0) {
    ::close(pipe_fd_);
    pipe_fd_ = -1;
  }
  if (pipe_pid_ > 0) {
    const int st = reap_pipe(pipe_pid_, !done_);
    pipe_pid_ = -1;
    // A command stopped early by us is ended: only an exit of its own with a non-zero code, or a
    // death by a signal other than SIGPIPE, counts as a failure, and only when we read to the end.
    if (done_ && st != -1 && WIFEXITED(st) && WEXITSTATUS(st) != 0) {
      status_ = ShardStatus::pipe_failed;  // the command's failure explains any read error
      error_ = "command exited with status " + std::to_string(WEXITSTATUS(st));
    } else if (done_ && st != -1 && WIFSIGNALED(st) && WTERMSIG(st) != SIGPIPE) {
      status_ = ShardStatus::pipe_failed;
      error_ = "command was killed by signal " + std::to_string(WTERMSIG(st));
    }
  }
}

namespace {

// The sample member an entry names (key and lower-case extension), or false for what is no
// member: directories, links, unnamed entries, WebDataset's __key__-style meta files.
bool member_name(archive_entry* entry, std::string& name, std::string& key, std::string& ext) {
  if (archive_entry_filetype(entry) != AE_IFREG) return false;
  const char* cname = archive_entry_pathname(entry);
  if (!cname) return false;
  name = cname;
  const auto slash = name.rfind('/');
  const std::string base = slash == std::string::npos ? name : name.substr(slash + 1);
  if (base.size() >= 4 && base.compare(0, 2, "__") == 0 &&
      base.compare(base.size() - 2, 2, "__") == 0)
    return false;
  return split_key(name, &key, &ext);
}

}  // namespace

bool ShardReader::read_bytes(std::int64_t size, std::string& bytes) {
  if (size > 0) bytes.reserve(static_cast<std::size_t>(size));
  char buf[1 << 16];
  while (true) {
    const la_ssize_t n = archive_read_data(ar_, buf, sizeof buf);
    if (n < 0) return false;
    if (n == 0) break;
    bytes.append(buf, static_cast<std::size_t>(n));
  }
  return size < 0 || static_cast<std::int64_t>(bytes.size()) == size;
}

ShardReader::Read ShardReader::read_member(Member& m) {
  archive_entry* entry = nullptr;
  const int rc = archive_read_next_header(ar_, &entry);
  if (rc == ARCHIVE_EOF) {
    done_ = true;
    return Read::stop;
  }
  if (rc < ARCHIVE_WARN) {
    const char* msg = archive_error_string(ar_);
    // A header that cannot be read before any entry: not a tar at all.
    fail(has_pending_ || archive_file_count(ar_) > 0 ? ShardStatus::truncated
                                                     : ShardStatus::unreadable,
         msg ? msg : "damaged tar header");
    has_pending_ = false;  // its sample may be incomplete
    return Read::stop;
  }
  std::string name;
  if (!member_name(entry, name, m.key, m.ext)) return Read::skipped;
  const std::int64_t size = archive_entry_size_is_set(entry) ? archive_entry_size(entry) : -1;
  // Too large: the entry alone (skipped, the rest of its sample kept), or the sample with it
  // (its files are dropped and the rest of its bytes skipped unread).
  const std::int64_t held = has_pending_ && pending_.key == m.key ? pending_bytes_ : 0;
  m.entry_too_large = size > kMaxEntryBytes;
  m.sample_too_large =
      !m.entry_too_large && (held > max_sample_bytes_ || held + size > max_sample_bytes_);
  const bool ok = m.entry_too_large || m.sample_too_large
                      ? archive_read_data_skip(ar_) == ARCHIVE_OK
                      : read_bytes(size, m.bytes);
  if (ok) return Read::member;
  const char* msg = archive_error_string(ar_);
  fail(ShardStatus::truncated, std::string("inside '") + name + "': " + (msg ? msg : "short read"));
  // The sample being read is incomplete; one with another key before it is whole.
  if (has_pending_ && pending_.key == m.key) has_pending_ = false;
  return Read::stop;
}

void ShardReader::start_sample(std::string key) {
  pending_ = RawSample{};
  pending_.key = std::move(key);
  pending_bytes_ = 0;
  has_pending_ = true;
}

void ShardReader::add(Member& m) {
  if (m.sample_too_large) {
    pending_bytes_ = max_sample_bytes_ + 1;  // stays too large for the rest of its files
    pending_.files.clear();
  } else if (!m.entry_too_large) {
    pending_bytes_ += static_cast<std::int64_t>(m.bytes.size());
    pending_.files.emplace_back(std::move(m.ext), std::move(m.bytes));
  }
}

// Members of one sample are consecutive (WebDataset's rule): a new key completes the last one.
bool ShardReader::next(RawSample& out) {
  if (!opened_) open();
  while (!done_) {
    Member m;
    const Read r = read_member(m);
    if (r == Read::stop) break;
    if (r == Read::skipped) continue;
    if (has_pending_ && pending_.key != m.key) {
      out = std::move(pending_);
      start_sample(std::move(m.key));
      add(m);
      return true;
    }
    if (!has_pending_) start_sample(std::move(m.key));
    add(m);
  }
  if (has_pending_) {
    has_pending_ = false;
    out = std::move(pending_);
    pending_ = RawSample{};
    return true;
  }
  close();
  return false;
}

}  // namespace clipper::data
