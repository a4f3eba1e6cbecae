#pragma once
// The local launcher behind `clipper launch`: starts this node's ranks with torchrun-compatible
// variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, GROUP_WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT, ...), forwards SIGINT, SIGTERM and SIGUSR1 to them, waits for (reaps)
// every one, and when one rank fails stops the others (SIGTERM) and reports that rank's exit code.
// A grace period (kill_grace_s) after the first forwarded signal or that SIGTERM, each rank still
// running gets SIGKILL with its process group, as torchrun does. Each rank runs in a process group
// of its own; a rank whose launcher died gets SIGTERM and, through watch_launcher(), ends its
// process group the grace period later. A rank that exits with kExitStoppedAfterSave (75:
// stopped by a signal, the wall-time limit or train.stop_at_step after saving) has not failed;
// the launcher then exits 75 too, so a job script can requeue. Needs no LibTorch.
#include <string>
#include <vector>

namespace clipper::dist {

// `clipper train`'s exit code after a stop that saved a checkpoint (loop::kExitStoppedAfterSave).
inline constexpr int kExitStoppedAfterSave = 75;

struct LaunchOptions {
  int nproc_per_node = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  // 0: a free port when nnodes == 1, else 29500.
  int master_port = 0;
  // The program and its arguments.
  std::vector<std::string> command;
  // Seconds between a stop request (a forwarded signal, the SIGTERM after a rank failed, the
  // launcher's death) and SIGKILL to the process groups of the ranks still running.
  double kill_grace_s = 30.0;
  // False: let the other ranks run on after a failure (tests watch each rank's own exit).
  bool stop_others_on_failure = true;
};

struct LaunchResult {
  // Exit code of each local rank; 128 + N when killed by signal N.
  std::vector<int> exit_codes;
  // Local rank that failed first, -1 when none did.
  int first_failed = -1;
  // Some rank exited with kExitStoppedAfterSave.
  bool stopped_after_save = false;
  // The code `clipper launch` exits with: the first failing rank's code; else 75 when some rank
  // stopped after saving (the others exited 0 or 75); else 0.
  int exit_code = 0;
};

// Runs the ranks and waits for all of them. Throws InputError on bad options.
LaunchResult run_ranks(const LaunchOptions& options);

// In a rank started by run_ranks (and whatever it runs with the same environment): a thread that
// notices the launcher's death (its watch pipe closes), asks this process to stop
// (core::request_stop) and SIGKILLs this process group kill_grace_s later, so that no rank lingers
// in a collective whose launcher is gone. Does nothing elsewhere.
void watch_launcher();

// A TCP port that was free a moment ago (bind to port 0 on 127.0.0.1).
int find_free_port();

}  // namespace clipper::dist
