#include "run_command.hpp"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iterator>

namespace clipper::cli {
namespace {

constexpr const char* kCommandVar = "CLIPPER_LAUNCH_COMMAND";
constexpr const char* kPidVar = "CLIPPER_LAUNCH_PID";

// A process's argv from /proc; empty when it cannot be read.
std::vector<std::string> read_cmdline(long pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  std::string cur;
  for (char c : all) {
    if (c) {
      cur += c;
    } else {
      args.push_back(cur);
      cur.clear();
    }
  }
  if (!cur.empty()) args.push_back(cur);
  return args;
}

std::string quote(const std::string& a) {
  static const std::string plain =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./=:,@%+-";
  if (!a.empty() && a.find_first_not_of(plain) == std::string::npos) return a;
  std::string q = "'";
  for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string basename(const std::string& p) {
  const auto slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

// torchrun's command line (its parent process), without the Python interpreter its script line
// adds; empty when the parent is not torchrun.
std::vector<std::string> torchrun_command() {
  auto args = read_cmdline(static_cast<long>(::getppid()));
  if (args.size() >= 2 && basename(args[0]).rfind("python", 0) == 0 &&
      basename(args[1]) == "torchrun")
    args.erase(args.begin());
  if (args.empty() || basename(args[0]) != "torchrun") return {};
  return args;
}

}  // namespace

std::string shell_command(const std::vector<std::string>& args) {
  std::string s;
  for (const auto& a : args) s += (s.empty() ? "" : " ") + quote(a);
  return s;
}

std::vector<std::string> without_resume(std::vector<std::string> args) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--resume") {
      ++i;  // and its value
      continue;
    }
    if (args[i].rfind("--resume=", 0) == 0) continue;
    out.push_back(args[i]);
  }
  return out;
}

void export_launch_command() {
  ::setenv(kCommandVar, shell_command(without_resume(read_cmdline(::getpid()))).c_str(), 1);
  ::setenv(kPidVar, std::to_string(::getpid()).c_str(), 1);
}

std::string started_command() {
  const char* launcher = env(kPidVar);
  if (launcher && std::atol(launcher) == static_cast<long>(::getppid()) && env(kCommandVar))
    return env(kCommandVar);
  if (env("TORCHELASTIC_RUN_ID")) {
    const auto torchrun = torchrun_command();
    if (!torchrun.empty()) return shell_command(without_resume(torchrun));
  }
  const std::string own = shell_command(without_resume(read_cmdline(::getpid())));
  if (env("SLURM_STEP_ID") && env("SLURM_NTASKS") && env("SLURM_NNODES"))
    return std::string("srun --nodes=") + env("SLURM_NNODES") + " --ntasks=" + env("SLURM_NTASKS") +
           " " + own;
  return own;
}

}  // namespace clipper::cli
