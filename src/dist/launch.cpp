#include "clipper/dist/launch.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <thread>

#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/core/signals.hpp"

namespace clipper::dist {

namespace {

volatile sig_atomic_t g_pending_signal = 0;

void on_signal(int sig) {
  g_pending_signal = sig;
}

int status_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

// The signals a rank stops on (saving a checkpoint first): a terminal's Ctrl-C, SLURM's and
// Kubernetes' SIGTERM, and SIGUSR1, which SLURM's --signal sends ahead of the time limit.
constexpr int kForwarded[] = {SIGINT, SIGTERM, SIGUSR1};

// Installs the forwarding handlers for the launcher's lifetime, restores the old ones after.
class SignalForwarding {
 public:
  SignalForwarding() {
    g_pending_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (std::size_t i = 0; i < std::size(kForwarded); ++i) sigaction(kForwarded[i], &sa, &old_[i]);
  }
  ~SignalForwarding() {
    for (std::size_t i = 0; i < std::size(kForwarded); ++i)
      sigaction(kForwarded[i], &old_[i], nullptr);
  }

 private:
  struct sigaction old_[std::size(kForwarded)]{};
};

}  // namespace

int find_free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw core::Error(std::string("find_free_port: socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    throw core::Error(std::string("find_free_port: bind: ") + std::strerror(errno));
  }
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

namespace {

void check_options(const LaunchOptions& o) {
  using core::require;
  require(!o.command.empty(),
          "launch: no command given (clipper launch [options] -- COMMAND ARGS...)");
  require(o.nproc_per_node >= 1, "launch: --nproc-per-node must be at least 1");
  require(o.nnodes >= 1, "launch: --nnodes must be at least 1");
  require(o.node_rank >= 0 && o.node_rank < o.nnodes,
          "launch: --node-rank " + std::to_string(o.node_rank) + " is not in [0, " +
              std::to_string(o.nnodes) + ")");
  require(o.master_port >= 0 && o.master_port <= 65535,
          "launch: --master-port must be in [0, 65535]");
  require(!o.master_addr.empty(), "launch: --master-addr is empty");
  if (o.nnodes > 1 && (o.master_addr == "127.0.0.1" || o.master_addr == "localhost"))
    CLIPPER_WARN("launch: --nnodes "
                 << o.nnodes << " with --master-addr " << o.master_addr
                 << ": every node must run on this machine; other machines need the "
                    "address of node 0");
}

// What every rank of this launch shares.
struct Launch {
  const LaunchOptions& o;
  int port, world;
  std::string omp_threads, run_id;
  pid_t launcher;
  int watch_fd;  // the read end of a pipe whose write end only the launcher holds
};

// The variables that tell a rank where its launcher's watch pipe is (watch_launcher()).
constexpr const char* kWatchFdVar = "CLIPPER_LAUNCHER_FD";
constexpr const char* kWatchGraceVar = "CLIPPER_LAUNCHER_GRACE_S";

// In the child: torchrun's variables, then exec. Its own process group (a terminal's Ctrl-C
// reaches the launcher only, which forwards it once); it stops with the launcher (SIGTERM) and
// ends itself a grace period later (watch_launcher(), through the inherited watch pipe).
[[noreturn]] void exec_rank(const Launch& l, int local) {
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != l.launcher) ::_exit(1);
  ::fcntl(l.watch_fd, F_SETFD, 0);  // kept across exec; the write end closes there
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int sig : kForwarded) sigaction(sig, &dfl, nullptr);
  const auto& o = l.o;
  const int rank = o.node_rank * o.nproc_per_node + local;
  auto set = [](const char* k, const std::string& v) { ::setenv(k, v.c_str(), 1); };
  set("RANK", std::to_string(rank));
  set("WORLD_SIZE", std::to_string(l.world));
  set("LOCAL_RANK", std::to_string(local));
  set("LOCAL_WORLD_SIZE", std::to_string(o.nproc_per_node));
  set("GROUP_RANK", std::to_string(o.node_rank));
  set("GROUP_WORLD_SIZE", std::to_string(o.nnodes));
  set("ROLE_RANK", std::to_string(rank));
  set("ROLE_WORLD_SIZE", std::to_string(l.world));
  set("ROLE_NAME", "default");
  set("MASTER_ADDR", o.master_addr);
  set("MASTER_PORT", std::to_string(l.port));
  set("TORCHELASTIC_RESTART_COUNT", "0");
  set("TORCHELASTIC_MAX_RESTARTS", "0");
  set("TORCHELASTIC_RUN_ID", l.run_id);
  set("TORCHELASTIC_USE_AGENT_STORE", "False");
  if (!std::getenv("OMP_NUM_THREADS")) set("OMP_NUM_THREADS", l.omp_threads);
  set(kWatchFdVar, std::to_string(l.watch_fd));
  set(kWatchGraceVar, std::to_string(o.kill_grace_s));
  std::vector<char*> argv;
  for (const auto& a : o.command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execvp(argv[0], argv.data());
  const std::string msg =
      "launch: cannot run '" + o.command[0] + "': " + std::strerror(errno) + "\n";
  ssize_t ignored = ::write(2, msg.data(), msg.size());
  (void)ignored;
  ::_exit(127);
}

std::vector<pid_t> spawn_ranks(const Launch& l) {
  const int n = l.o.nproc_per_node;
  std::vector<pid_t> pids(n, -1);
  for (int local = 0; local < n; ++local) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      for (int j = 0; j < local; ++j) ::kill(pids[j], SIGKILL);
      for (int j = 0; j < local; ++j) ::waitpid(pids[j], nullptr, 0);
      throw core::Error(std::string("launch: fork failed: ") + std::strerror(errno));
    }
    if (pid == 0) exec_rank(l, local);
    ::setpgid(pid, pid);  // as the child does, so that the group exists before the first signal
    pids[local] = pid;
  }
  return pids;
}

using Clock = std::chrono::steady_clock;

// Waits for every rank, forwarding signals; the first failure stops the others (SIGTERM) when
// asked to. A grace period after the first forwarded signal or that SIGTERM, the process groups
// of the ranks still running get SIGKILL.
class Supervisor {
 public:
  Supervisor(const LaunchOptions& o, std::vector<pid_t> pids) : o_(o), pids_(std::move(pids)) {
    result_.exit_codes.assign(pids_.size(), -1);
    running_ = static_cast<int>(pids_.size());
  }

  LaunchResult run() {
    while (running_ > 0) {
      forward_pending_signal();
      if (reap()) continue;
      if (stopping_ && Clock::now() >= kill_at_) kill_running();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (result_.first_failed < 0 && result_.stopped_after_save)
      result_.exit_code = kExitStoppedAfterSave;
    return result_;
  }

 private:
  void signal_running(int sig) {
    for (std::size_t i = 0; i < pids_.size(); ++i)
      if (result_.exit_codes[i] < 0) ::kill(pids_[i], sig);
  }

  // SIGKILL to each running rank's process group (what it started with it included).
  void kill_running() {
    CLIPPER_ERROR("launch: " << running_ << " rank(s) still running " << o_.kill_grace_s
                             << " s after being asked to stop; sending SIGKILL to their process "
                                "groups");
    for (std::size_t i = 0; i < pids_.size(); ++i)
      if (result_.exit_codes[i] < 0 && ::kill(-pids_[i], SIGKILL) != 0) ::kill(pids_[i], SIGKILL);
    stopping_ = false;
  }

  // The grace period runs from the first request to stop; later ones do not extend it.
  void start_grace() {
    if (stopping_ || killed_) return;
    stopping_ = killed_ = true;
    kill_at_ =
        Clock::now() + std::chrono::milliseconds(static_cast<long long>(o_.kill_grace_s * 1000));
  }

  void forward_pending_signal() {
    if (const int sig = g_pending_signal) {
      g_pending_signal = 0;
      CLIPPER_WARN("launch: got signal " << sig << ", forwarding it to " << running_
                                         << " rank(s); SIGKILL to those still running in "
                                         << o_.kill_grace_s << " s");
      signal_running(sig);
      start_grace();
    }
  }

  bool reap() {
    bool reaped = false;
    for (std::size_t local = 0; local < pids_.size(); ++local) {
      if (result_.exit_codes[local] >= 0) continue;
      int status = 0;
      if (::waitpid(pids_[local], &status, WNOHANG) != pids_[local]) continue;
      reaped = true;
      --running_;
      exited(static_cast<int>(local), status_code(status));
    }
    return reaped;
  }

  void exited(int local, int code) {
    result_.exit_codes[local] = code;
    // A rank that stopped after saving (a signal, the wall-time limit, stop_at_step) is no
    // failure: the others stop the same way on their own.
    if (code == kExitStoppedAfterSave && !result_.stopped_after_save) {
      result_.stopped_after_save = true;
      CLIPPER_INFO("launch: rank " << o_.node_rank * o_.nproc_per_node + local
                                   << " stopped after saving a checkpoint (exit 75); the others "
                                      "stop the same way");
    }
    if (code == 0 || code == kExitStoppedAfterSave || result_.first_failed >= 0) return;
    result_.first_failed = local;
    result_.exit_code = code;
    const bool stop_others = o_.stop_others_on_failure && running_ > 0;
    CLIPPER_ERROR("launch: rank " << o_.node_rank * o_.nproc_per_node + local << " (local " << local
                                  << ") exited with code " << code
                                  << (stop_others ? "; stopping the other " +
                                                        std::to_string(running_) + " rank(s)"
                                                  : std::string()));
    if (!stop_others) return;
    signal_running(SIGTERM);
    start_grace();
  }

  const LaunchOptions& o_;
  std::vector<pid_t> pids_;
  LaunchResult result_;
  int running_ = 0;
  bool stopping_ = false;  // a SIGKILL is due at kill_at_
  bool killed_ = false;    // the grace period has started (it runs once)
  Clock::time_point kill_at_{};
};

}  // namespace

LaunchResult run_ranks(const LaunchOptions& o) {
  check_options(o);
  const int port = o.master_port != 0 ? o.master_port : (o.nnodes == 1 ? find_free_port() : 29500);
  const int n = o.nproc_per_node;
  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  Launch l{o,
           port,
           n * o.nnodes,
           std::to_string(std::max(1u, cpus / static_cast<unsigned>(n))),
           std::to_string(::getpid()) + "-" + std::to_string(port),
           ::getpid(),
           -1};
  int watch[2];
  if (::pipe2(watch, O_CLOEXEC) != 0)
    throw core::Error(std::string("launch: pipe failed: ") + std::strerror(errno));
  l.watch_fd = watch[0];
  CLIPPER_INFO("launch: " << n << " rank(s) on node " << o.node_rank << "/" << o.nnodes
                          << ", world " << l.world << ", rendezvous " << o.master_addr << ":"
                          << port);
  SignalForwarding forwarding;
  auto pids = spawn_ranks(l);
  ::close(watch[0]);
  const auto result = Supervisor(o, std::move(pids)).run();
  ::close(watch[1]);
  return result;
}

void watch_launcher() {
  const char* fd_text = std::getenv(kWatchFdVar);
  if (!fd_text) return;
  const int fd = std::atoi(fd_text);
  const char* grace_text = std::getenv(kWatchGraceVar);
  const double grace_s = grace_text ? std::atof(grace_text) : 30.0;
  ::unsetenv(kWatchFdVar);
  ::unsetenv(kWatchGraceVar);
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) return;
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);  // not for the commands this rank starts
  std::thread([fd, grace_s] {
    char c;
    while (::read(fd, &c, 1) < 0 && errno == EINTR) {
    }
    CLIPPER_ERROR("the launcher is gone: stopping, and ending this rank's process group in "
                  << grace_s << " s if it has not stopped by then");
    core::request_stop(SIGTERM);
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<long long>(grace_s * 1000)));
    ::kill(0, SIGKILL);
  }).detach();
}

}  // namespace clipper::dist
