#include "clipper/checkpoint/sync.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>

#include "clipper/core/log.hpp"
#include "clipper/core/redact.hpp"

extern char** environ;

namespace clipper::checkpoint {
namespace {

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The command's output, from `fd` until it closes, appended to `log` line by line through
// redact_secrets (a sync tool may print the URL or header it was given).
void copy_redacted(int fd, int log) {
  std::string pending;
  char buf[4096];
  const auto put = [log](const std::string& text) {
    const std::string out = core::redact_secrets(text);
    for (std::size_t done = 0; done < out.size();) {
      const ssize_t n = ::write(log, out.data() + done, out.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      done += static_cast<std::size_t>(n);
    }
  };
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buf, static_cast<std::size_t>(n));
    const std::size_t end = pending.rfind('\n');
    if (end != std::string::npos || pending.size() > (64u << 10)) {
      const std::size_t cut = end != std::string::npos ? end + 1 : pending.size();
      put(pending.substr(0, cut));
      pending.erase(0, cut);
    }
  }
  if (!pending.empty()) put(pending);
}

}  // namespace

std::string expand_sync_command(const std::string& command, const std::string& dir) {
  const std::string name = std::filesystem::path(dir).filename().string();
  std::string out;
  for (std::size_t i = 0; i < command.size();) {
    if (command.compare(i, 5, "{dir}") == 0) {
      out += shell_quote(dir);
      i += 5;
    } else if (command.compare(i, 6, "{name}") == 0) {
      out += shell_quote(name);
      i += 6;
    } else {
      out += command[i++];
    }
  }
  return out;
}

int run_shell(const std::string& command, const std::string& log_path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  // With a log, the output goes through a pipe and is masked on its way there.
  int log = -1, out[2] = {-1, -1};
  if (!log_path.empty()) {
    log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log < 0 || ::pipe2(out, O_CLOEXEC) != 0) {
      if (log >= 0) ::close(log);
      posix_spawn_file_actions_destroy(&actions);
      return 127;
    }
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, out[1], 2);
  }
  // posix_spawn, not system(): system() ignores SIGINT and SIGTERM in the whole process while the
  // command runs, which would swallow a stop request meant for training.
  const char* argv[] = {"/bin/sh", "-c", command.c_str(), nullptr};
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, "/bin/sh", &actions, nullptr, const_cast<char**>(argv), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (out[1] >= 0) ::close(out[1]);
  if (rc == 0 && log >= 0) copy_redacted(out[0], log);
  if (log >= 0) {
    ::close(log);
    ::close(out[0]);
  }
  if (rc != 0) return 127;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return 127;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 127;
}

BackgroundSync::BackgroundSync(std::string command, std::string log_path)
    : command_(std::move(command)), log_path_(std::move(log_path)) {
  std::error_code ec;  // a log folder that cannot be made shows up as the command's failure
  if (!log_path_.empty())
    std::filesystem::create_directories(std::filesystem::path(log_path_).parent_path(), ec);
  worker_ = std::thread([this] { loop(); });
}

BackgroundSync::~BackgroundSync() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    closing_ = true;
  }
  changed_.notify_all();
  worker_.join();
}

void BackgroundSync::submit(const std::string& dir) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queued_ = dir;
  }
  changed_.notify_all();
}

void BackgroundSync::wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return running_.empty() && queued_.empty(); });
}

bool BackgroundSync::uses(const std::string& dir) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return dir == running_ || dir == queued_;
}

std::int64_t BackgroundSync::runs() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return runs_;
}

std::int64_t BackgroundSync::failures() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return failures_;
}

// Closing still runs what is queued: the last commit of a run is the one most worth copying.
void BackgroundSync::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    changed_.wait(lock, [this] { return closing_ || !queued_.empty(); });
    if (queued_.empty()) return;
    running_ = std::move(queued_);
    queued_.clear();
    const std::string command = expand_sync_command(command_, running_);
    lock.unlock();
    const auto t = std::chrono::steady_clock::now();
    const int code = run_shell(command, log_path_);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    lock.lock();
    ++runs_;
    if (code != 0) {
      ++failures_;
      CLIPPER_WARN("checkpoint sync of "
                   << running_ << " failed with exit code " << code << " (" << failures_ << " of "
                   << runs_ << " syncs failed; "
                   << (log_path_.empty() ? "its output is above" : "output in " + log_path_)
                   << "); training goes on");
    } else {
      CLIPPER_INFO("checkpoint sync of " << running_ << " done in " << seconds << " s");
    }
    running_.clear();
    changed_.notify_all();
  }
}

}  // namespace clipper::checkpoint
