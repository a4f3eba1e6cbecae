#include "clipper/dist/launch.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <iterator>
#include <thread>

#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"

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

LaunchResult run_ranks(const LaunchOptions& o) {
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
  const int port = o.master_port != 0 ? o.master_port : (o.nnodes == 1 ? find_free_port() : 29500);
  const int n = o.nproc_per_node;
  const int world = n * o.nnodes;
  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  const std::string omp_threads = std::to_string(std::max(1u, cpus / static_cast<unsigned>(n)));
  const std::string run_id = std::to_string(::getpid()) + "-" + std::to_string(port);

  CLIPPER_INFO("launch: " << n << " rank(s) on node " << o.node_rank << "/" << o.nnodes
                          << ", world " << world << ", rendezvous " << o.master_addr << ":"
                          << port);

  SignalForwarding forwarding;
  LaunchResult result;
  result.exit_codes.assign(n, -1);
  std::vector<pid_t> pids(n, -1);
  const pid_t launcher = ::getpid();
  for (int local = 0; local < n; ++local) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      for (int j = 0; j < local; ++j) ::kill(pids[j], SIGKILL);
      for (int j = 0; j < local; ++j) ::waitpid(pids[j], nullptr, 0);
      throw core::Error(std::string("launch: fork failed: ") + std::strerror(errno));
    }
    if (pid == 0) {
      // Child: its own process group (a terminal's Ctrl-C reaches the launcher only, which
      // forwards it once); dies with the launcher.
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != launcher) ::_exit(1);
      struct sigaction dfl {};
      dfl.sa_handler = SIG_DFL;
      sigemptyset(&dfl.sa_mask);
      for (int sig : kForwarded) sigaction(sig, &dfl, nullptr);
      const int rank = o.node_rank * n + local;
      auto set = [](const char* k, const std::string& v) { ::setenv(k, v.c_str(), 1); };
      set("RANK", std::to_string(rank));
      set("WORLD_SIZE", std::to_string(world));
      set("LOCAL_RANK", std::to_string(local));
      set("LOCAL_WORLD_SIZE", std::to_string(n));
      set("GROUP_RANK", std::to_string(o.node_rank));
      set("GROUP_WORLD_SIZE", std::to_string(o.nnodes));
      set("ROLE_RANK", std::to_string(rank));
      set("ROLE_WORLD_SIZE", std::to_string(world));
      set("ROLE_NAME", "default");
      set("MASTER_ADDR", o.master_addr);
      set("MASTER_PORT", std::to_string(port));
      set("TORCHELASTIC_RESTART_COUNT", "0");
      set("TORCHELASTIC_MAX_RESTARTS", "0");
      set("TORCHELASTIC_RUN_ID", run_id);
      set("TORCHELASTIC_USE_AGENT_STORE", "False");
      if (!std::getenv("OMP_NUM_THREADS")) set("OMP_NUM_THREADS", omp_threads);
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
    pids[local] = pid;
  }

  using Clock = std::chrono::steady_clock;
  int running = n;
  bool stopping = false;
  Clock::time_point kill_at{};
  while (running > 0) {
    if (const int sig = g_pending_signal) {
      g_pending_signal = 0;
      CLIPPER_WARN("launch: got signal " << sig << ", forwarding it to " << running << " rank(s)");
      for (int i = 0; i < n; ++i)
        if (result.exit_codes[i] < 0) ::kill(pids[i], sig);
    }
    bool reaped = false;
    for (int local = 0; local < n; ++local) {
      if (result.exit_codes[local] >= 0) continue;
      int status = 0;
      if (::waitpid(pids[local], &status, WNOHANG) != pids[local]) continue;
      reaped = true;
      const int code = status_code(status);
      result.exit_codes[local] = code;
      --running;
      // A rank that stopped after saving (a signal, the wall-time limit, stop_at_step) is no
      // failure: the others stop the same way on their own.
      if (code == kExitStoppedAfterSave) result.stopped_after_save = true;
      if (code != 0 && code != kExitStoppedAfterSave && result.first_failed < 0) {
        result.first_failed = local;
        result.exit_code = code;
        CLIPPER_ERROR("launch: rank "
                      << o.node_rank * n + local << " (local " << local << ") exited with code "
                      << code
                      << (running > 0 && o.stop_others_on_failure
                              ? "; stopping the other " + std::to_string(running) + " rank(s)"
                              : std::string()));
        if (o.stop_others_on_failure && running > 0) {
          stopping = true;
          kill_at = Clock::now() +
                    std::chrono::milliseconds(static_cast<long long>(o.kill_grace_s * 1000));
          for (int i = 0; i < n; ++i)
            if (result.exit_codes[i] < 0) ::kill(pids[i], SIGTERM);
        }
      }
    }
    if (reaped) continue;
    if (stopping && Clock::now() >= kill_at) {
      for (int i = 0; i < n; ++i)
        if (result.exit_codes[i] < 0) ::kill(pids[i], SIGKILL);
      stopping = false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (result.first_failed < 0 && result.stopped_after_save)
    result.exit_code = kExitStoppedAfterSave;
  return result;
}

}  // namespace clipper::dist
