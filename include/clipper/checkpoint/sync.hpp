#pragma once
// checkpoint.sync_command: after each commit rank 0 copies the committed folder elsewhere (rsync,
// aws s3 sync, ...) with a shell command run in the background. Only committed folders are handed
// over, so a copy holds a manifest and the files it lists; an interrupted copy lacks files (or has
// short ones) and the resume lookup skips it like any incomplete checkpoint. A failure is logged
// and counted; it never blocks or fails training. The command runs in its own process group, so a
// stop that cannot wait longer (wait_at_most) ends it whole, with whatever it started.
#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace clipper::checkpoint {

// `command` with every "{dir}" replaced by `dir` and every "{name}" by its last component
// ("step_00000200"), quoted for /bin/sh.
std::string expand_sync_command(const std::string& command, const std::string& dir);
// A command started by spawn_shell: its pid (and process group id), and, with a log, the read end
// of its output pipe and the log it is masked into.
struct ShellChild {
  pid_t pid = -1;
  int output = -1;
  int log = -1;
};
// Starts `command` with /bin/sh -c in a process group of its own (its pid is the group's id),
// stdin from /dev/null, stdout and stderr through a pipe to `log_path` (inherited when empty);
// pid -1 when it cannot start.
ShellChild spawn_shell(const std::string& command, const std::string& log_path);
// Appends the child's output, until every writer has closed it, to its log line by line through
// core::redact_secrets (a sync tool may print the URL or header it was given), then closes both.
void drain_output(ShellChild& child);
// drain_output, then waits for (reaps) the child: its exit status, 128 + N when killed by signal
// N, 127 when it could not start.
int reap_shell(ShellChild& child);
// spawn_shell, then reap_shell.
int run_shell(const std::string& command, const std::string& log_path);

class BackgroundSync {
 public:
  BackgroundSync(std::string command, std::string log_path);
  // Waits for the command running now and for the one queued.
  ~BackgroundSync();
  BackgroundSync(const BackgroundSync&) = delete;
  BackgroundSync& operator=(const BackgroundSync&) = delete;

  // Never waits: while a sync runs, `dir` is queued, replacing a queued older folder (the newest
  // commit is what matters; the next sync carries everything the skipped one would have).
  void submit(const std::string& dir);
  // Until nothing runs or waits.
  void wait();
  // Until nothing runs or waits, for at most `seconds`; then the queued folder is dropped and the
  // running command's process group gets SIGTERM, and SIGKILL `grace_s` later if it still runs.
  // Returns whether the syncs finished by themselves; either way nothing runs on return and no
  // later submit() starts a command.
  bool wait_at_most(double seconds, double grace_s = 5.0);
  // Whether `dir` is being synced or queued (pruning leaves it alone until the next commit).
  bool uses(const std::string& dir) const;
  std::int64_t runs() const;
  std::int64_t failures() const;

 private:
  void loop();
  void signal_running(int sig);  // with mutex_ held
  void report(int code, double seconds);
  const std::string command_, log_path_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::string running_, queued_;
  std::int64_t runs_ = 0, failures_ = 0;
  // The running command's pid while it can still be signalled (not yet reaped), else 0.
  pid_t pid_ = 0;
  bool closing_ = false;
  bool abandoned_ = false;  // wait_at_most gave up: nothing more starts
  std::thread worker_;
};

}  // namespace clipper::checkpoint
