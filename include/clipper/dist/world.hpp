#pragma once
// Where this process sits in the job: its rank, the world size, the node-local rank and the
// rendezvous address. Discovered from the launcher's environment variables:
//
//   torchrun / clipper launch   RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK,
//                               MASTER_ADDR, MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE honoured)
//   Open MPI (mpirun)           OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE
//   SLURM (srun)                SLURM_PROCID, SLURM_NTASKS (SLURM_STEP_NUM_TASKS), SLURM_LOCALID,
//                               SLURM_NODEID, SLURM_STEP_NODELIST / SLURM_JOB_NODELIST
//
// The first one whose rank variable is set wins, in that order; nothing set means one process.
// Without LOCAL_RANK / LOCAL_WORLD_SIZE (or the MPI local variables) all ranks are taken to share
// one node. SLURM counts only inside an srun step (SLURM_STEP_ID set), not in the batch script.
// Config overrides (dist.master_addr, dist.master_port) beat the environment. Variables that
// contradict each other (a rank outside the world, a torchrun RANK that differs from the MPI
// rank, a value that is not a number) throw clipper::core::InputError naming the variables.
// Needs no LibTorch.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace clipper::config {
struct DistConfig;
}

namespace clipper::dist {

struct World {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  int node_rank = 0;
  int num_nodes = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // "single", "torchrun", "openmpi" or "slurm".
  std::string source = "single";
  // torchrun's agent already serves the TCPStore at MASTER_ADDR:MASTER_PORT: every rank connects
  // as a client (TORCHELASTIC_USE_AGENT_STORE=True).
  bool agent_store = false;
  // Keys of this launch in the store: torchrun restarts reuse its store, so keys carry the restart.
  std::string store_prefix = "clipper/0/";

  bool is_distributed() const { return world_size > 1; }
  bool is_main() const { return rank == 0; }
  // "rank 3/8 (node 1, local 1/4)".
  std::string describe() const;
};

using Environment = std::map<std::string, std::string>;

// The process environment as a map.
Environment process_environment();

// World from `env` (tests pass their own) and the config overrides.
World discover_world(const config::DistConfig& cfg, const Environment& env);
// World from the process environment.
World discover_world(const config::DistConfig& cfg);

// SLURM host lists: "node[01-04,07],gpu3" -> node01 node02 node03 node04 node07 gpu3.
// Zero padding is kept; malformed lists throw InputError.
std::vector<std::string> expand_slurm_nodelist(const std::string& nodelist);
// The first host of a SLURM host list, without expanding the rest.
std::string first_slurm_host(const std::string& nodelist);
// SLURM_TASKS_PER_NODE ("4(x2),3") -> tasks on each node: 4 4 3.
std::vector<int> expand_slurm_tasks_per_node(const std::string& spec);

}  // namespace clipper::dist
