#include "clipper/checkpoint/sync.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <iomanip>

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
// redact_secrets.
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

ShellChild spawn_shell(const std::string& command, const std::string& log_path) {
  ShellChild child;
  int pipe_fds[2] = {-1, -1};
  if (!log_path.empty()) {
    child.log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (child.log < 0 || ::pipe2(pipe_fds, O_CLOEXEC) != 0) {
      if (child.log >= 0) ::close(child.log);
      child.log = -1;
      return child;
    }
    child.output = pipe_fds[0];
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  if (pipe_fds[1] >= 0) {
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
  }
  // A process group of its own: a Ctrl-C meant for training does not reach it, and a stop that
  // cannot wait for it ends the shell and everything it started in one kill().
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  // posix_spawn, not system(): system() ignores SIGINT and SIGTERM in the whole process while the
  // command runs, which would swallow a stop request meant for training.
  const char* argv[] = {"/bin/sh", "-c", command.c_str(), nullptr};
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, "/bin/sh", &actions, &attr, const_cast<char**>(argv), environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  if (pipe_fds[1] >= 0) ::close(pipe_fds[1]);
  child.pid = rc == 0 ? pid : -1;
  if (rc != 0) drain_output(child);  // nothing to read: closes both
  return child;
}

void drain_output(ShellChild& child) {
  if (child.output >= 0 && child.log >= 0) copy_redacted(child.output, child.log);
  if (child.output >= 0) ::close(child.output);
  if (child.log >= 0) ::close(child.log);
  child.output = child.log = -1;
}

int reap_shell(ShellChild& child) {
  drain_output(child);
  if (child.pid <= 0) return 127;
  int status = 0;
  while (waitpid(child.pid, &status, 0) < 0)
    if (errno != EINTR) return 127;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 127;
}

int run_shell(const std::string& command, const std::string& log_path) {
  ShellChild child = spawn_shell(command, log_path);
  return reap_shell(child);
}

namespace {

// Blocks until `pid` has ended without reaping it, so its pid (and process group id) cannot be
// reused while another thread may still signal it.
void wait_exited(pid_t pid) {
  siginfo_t info{};
  while (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT) < 0)
    if (errno != EINTR) return;
}

}  // namespace

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
    if (abandoned_) return;
    queued_ = dir;
  }
  changed_.notify_all();
}

void BackgroundSync::wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return running_.empty() && queued_.empty(); });
}

bool BackgroundSync::wait_at_most(double seconds, double grace_s) {
  using std::chrono::duration;
  std::unique_lock<std::mutex> lock(mutex_);
  const auto idle = [this] { return running_.empty() && queued_.empty(); };
  if (changed_.wait_for(lock, duration<double>(std::max(0.0, seconds)), idle)) return true;
  abandoned_ = true;
  queued_.clear();
  signal_running(SIGTERM);
  const auto ended = [this] { return running_.empty(); };
  if (!changed_.wait_for(lock, duration<double>(std::max(0.0, grace_s)), ended)) {
    signal_running(SIGKILL);
    changed_.wait(lock, ended);
  }
  return false;
}

void BackgroundSync::signal_running(int sig) {
  if (pid_ > 0) ::kill(-pid_, sig);  // the whole group: the shell and what it started
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
    ShellChild child = spawn_shell(command, log_path_);
    const pid_t pid = child.pid;
    lock.lock();
    pid_ = pid;
    if (abandoned_) signal_running(SIGKILL);  // wait_at_most gave up while it was starting
    lock.unlock();
    // Read the output while it runs (a full pipe would stall it); it ends when the group does.
    drain_output(child);
    if (pid > 0) wait_exited(pid);
    lock.lock();
    pid_ = 0;  // reaped below: from here on its pid may belong to another process
    lock.unlock();
    const int code = reap_shell(child);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    lock.lock();
    report(code, seconds);
    running_.clear();
    changed_.notify_all();
  }
}

// With mutex_ held, after the command of running_ ended.
void BackgroundSync::report(int code, double seconds) {
  ++runs_;
  if (code == 0) {
    CLIPPER_INFO("checkpoint sync of " << running_ << " done in " << seconds << " s");
    return;
  }
  ++failures_;
  const std::string output = log_path_.empty() ? "its output is above" : "output in " + log_path_;
  if (abandoned_) {
    CLIPPER_WARN("checkpoint sync of "
                 << running_ << " unfinished: killed after " << std::fixed << std::setprecision(1)
                 << seconds << " s because the run is stopping (exit code " << code << "; "
                 << output << "); the checkpoint is committed here, "
                 << "its copy is incomplete");
    return;
  }
  CLIPPER_WARN("checkpoint sync of " << running_ << " failed with exit code " << code << " ("
                                     << failures_ << " of " << runs_ << " syncs failed; " << output
                                     << "); training goes on");
}

}  // namespace clipper::checkpoint
