// World discovery from launcher variables (torchrun, Open MPI, SLURM) and SLURM list parsing.
#include <gtest/gtest.h>

#include "clipper/config/config.hpp"
#include "clipper/core/error.hpp"
#include "clipper/dist/launch.hpp"
#include "clipper/dist/world.hpp"

namespace {

using clipper::config::DistConfig;
using clipper::core::InputError;
using clipper::dist::discover_world;
using clipper::dist::Environment;

std::string error_of(const Environment& env, const DistConfig& cfg = {}) {
  try {
    discover_world(cfg, env);
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(World, NothingSetIsOneProcess) {
  const auto w = discover_world(DistConfig{}, Environment{{"HOME", "/root"}});
  EXPECT_EQ(w.source, "single");
  EXPECT_EQ(w.rank, 0);
  EXPECT_EQ(w.world_size, 1);
  EXPECT_FALSE(w.is_distributed());
}

TEST(World, Torchrun) {
  const auto w = discover_world(DistConfig{}, {{"RANK", "5"},
                                               {"WORLD_SIZE", "8"},
                                               {"LOCAL_RANK", "1"},
                                               {"LOCAL_WORLD_SIZE", "4"},
                                               {"GROUP_RANK", "1"},
                                               {"MASTER_ADDR", "node7"},
                                               {"MASTER_PORT", "29400"},
                                               {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                                               {"TORCHELASTIC_RESTART_COUNT", "2"}});
  EXPECT_EQ(w.source, "torchrun");
  EXPECT_EQ(w.rank, 5);
  EXPECT_EQ(w.world_size, 8);
  EXPECT_EQ(w.local_rank, 1);
  EXPECT_EQ(w.local_world_size, 4);
  EXPECT_EQ(w.node_rank, 1);
  EXPECT_EQ(w.num_nodes, 2);
  EXPECT_EQ(w.master_addr, "node7");
  EXPECT_EQ(w.master_port, 29400);
  EXPECT_TRUE(w.agent_store);
  EXPECT_EQ(w.store_prefix, "clipper/2/");
  EXPECT_EQ(w.describe(), "rank 5/8 (node 1/2, local 1/4)");
}

// 2^32 + 1 would wrap to 1 if the values were narrowed to int unchecked.
TEST(World, VariablesBeyondIntAreInputErrors) {
  std::string e = error_of({{"RANK", "4294967297"}, {"WORLD_SIZE", "8"}});
  EXPECT_NE(e.find("RANK='4294967297' is out of range"), std::string::npos) << e;
  e = error_of({{"SLURM_PROCID", "0"},
                {"SLURM_NTASKS", "1"},
                {"SLURM_STEP_ID", "0"},
                {"SLURM_NODEID", "0"},
                {"SLURM_TASKS_PER_NODE", "4294967297"}});
  EXPECT_NE(e.find("4294967297' is out of range"), std::string::npos) << e;
}

TEST(World, TorchrunDefaultsOnOneNode) {
  const auto w =
      discover_world(DistConfig{}, {{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"}});
  EXPECT_EQ(w.master_addr, "127.0.0.1");
  EXPECT_EQ(w.master_port, 29500);
  EXPECT_EQ(w.local_world_size, 2);
  EXPECT_FALSE(w.agent_store);
}

TEST(World, ConfigOverridesBeatTheEnvironment) {
  DistConfig cfg;
  cfg.master_addr = "10.0.0.1";
  cfg.master_port = 12345;
  const auto w = discover_world(
      cfg,
      {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "elsewhere"}, {"MASTER_PORT", "29500"}});
  EXPECT_EQ(w.master_addr, "10.0.0.1");
  EXPECT_EQ(w.master_port, 12345);
}

TEST(World, OpenMpi) {
  const auto w = discover_world(DistConfig{}, {{"OMPI_COMM_WORLD_RANK", "3"},
                                               {"OMPI_COMM_WORLD_SIZE", "4"},
                                               {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                               {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                                               {"MASTER_ADDR", "head"}});
  EXPECT_EQ(w.source, "openmpi");
  EXPECT_EQ(w.rank, 3);
  EXPECT_EQ(w.local_rank, 1);
  EXPECT_EQ(w.node_rank, 1);
  EXPECT_EQ(w.num_nodes, 2);
  EXPECT_EQ(w.master_addr, "head");
}

TEST(World, OpenMpiOnSeveralNodesNeedsARendezvousHost) {
  const auto e = error_of({{"OMPI_COMM_WORLD_RANK", "0"},
                           {"OMPI_COMM_WORLD_SIZE", "4"},
                           {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
                           {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  EXPECT_NE(e.find("spans 2 nodes"), std::string::npos) << e;
  EXPECT_NE(e.find("MASTER_ADDR or dist.master_addr"), std::string::npos) << e;
}

TEST(World, Slurm) {
  const auto w = discover_world(DistConfig{}, {{"SLURM_PROCID", "6"},
                                               {"SLURM_NTASKS", "8"},
                                               {"SLURM_LOCALID", "2"},
                                               {"SLURM_NODEID", "1"},
                                               {"SLURM_NNODES", "2"},
                                               {"SLURM_STEP_ID", "0"},
                                               {"SLURM_TASKS_PER_NODE", "4(x2)"},
                                               {"SLURM_JOB_ID", "123456"},
                                               {"SLURM_JOB_NODELIST", "gpu[007-008]"}});
  EXPECT_EQ(w.source, "slurm");
  EXPECT_EQ(w.rank, 6);
  EXPECT_EQ(w.world_size, 8);
  EXPECT_EQ(w.local_rank, 2);
  EXPECT_EQ(w.local_world_size, 4);
  EXPECT_EQ(w.node_rank, 1);
  EXPECT_EQ(w.num_nodes, 2);
  EXPECT_EQ(w.master_addr, "gpu007");
  EXPECT_EQ(w.master_port, 20000 + 123456 % 10000);
}

TEST(World, SlurmBatchScriptIsNotAnSrunTask) {
  // In the batch script itself (no srun step) clipper runs as one process.
  const auto w = discover_world(
      DistConfig{}, {{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "8"}, {"SLURM_JOB_ID", "5"}});
  EXPECT_EQ(w.source, "single");
  EXPECT_EQ(w.world_size, 1);
}

TEST(World, TorchrunInsideSrunWins) {
  // srun starts one torchrun per node; torchrun's variables describe the ranks.
  const auto w = discover_world(DistConfig{}, {{"RANK", "3"},
                                               {"WORLD_SIZE", "4"},
                                               {"LOCAL_RANK", "1"},
                                               {"LOCAL_WORLD_SIZE", "2"},
                                               {"MASTER_ADDR", "n1"},
                                               {"SLURM_PROCID", "1"},
                                               {"SLURM_NTASKS", "2"},
                                               {"SLURM_STEP_ID", "0"}});
  EXPECT_EQ(w.source, "torchrun");
  EXPECT_EQ(w.rank, 3);
}

TEST(World, InconsistentVariablesAreErrors) {
  auto e = error_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}});
  EXPECT_NE(e.find("rank 2 is outside the world of 2"), std::string::npos) << e;
  e = error_of({{"RANK", "0"}});
  EXPECT_NE(e.find("WORLD_SIZE is not set"), std::string::npos) << e;
  e = error_of({{"RANK", "zero"}, {"WORLD_SIZE", "2"}});
  EXPECT_NE(e.find("RANK='zero' is not an integer"), std::string::npos) << e;
  e = error_of(
      {{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "2"}, {"LOCAL_WORLD_SIZE", "2"}});
  EXPECT_NE(e.find("local rank 2 is outside the local world of 2"), std::string::npos) << e;
  e = error_of({{"RANK", "1"},
                {"WORLD_SIZE", "2"},
                {"OMPI_COMM_WORLD_RANK", "0"},
                {"OMPI_COMM_WORLD_SIZE", "2"}});
  EXPECT_NE(e.find("OMPI_COMM_WORLD_RANK=0 but RANK=1"), std::string::npos) << e;
  e = error_of({{"RANK", "0"}, {"WORLD_SIZE", "8"}, {"LOCAL_WORLD_SIZE", "4"}});
  EXPECT_NE(e.find("spans 2 nodes"), std::string::npos) << e;
  e = error_of({{"SLURM_PROCID", "1"},
                {"SLURM_NTASKS", "6"},
                {"SLURM_STEP_ID", "0"},
                {"SLURM_NODEID", "0"},
                {"SLURM_TASKS_PER_NODE", "4(x2)"}});
  EXPECT_NE(e.find("SLURM_NTASKS=6 but the tasks per node '4(x2)' add up to 8"), std::string::npos)
      << e;
  e = error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}});
  EXPECT_NE(e.find("rendezvous port 70000"), std::string::npos) << e;
}

TEST(SlurmNodelist, Expands) {
  using clipper::dist::expand_slurm_nodelist;
  EXPECT_EQ(expand_slurm_nodelist("node[01-04,07]"),
            (std::vector<std::string>{"node01", "node02", "node03", "node04", "node07"}));
  EXPECT_EQ(expand_slurm_nodelist("a1,b[8-10],c"),
            (std::vector<std::string>{"a1", "b8", "b9", "b10", "c"}));
  EXPECT_EQ(expand_slurm_nodelist("rack[1-2]-n[3,5]"),
            (std::vector<std::string>{"rack1-n3", "rack1-n5", "rack2-n3", "rack2-n5"}));
  EXPECT_EQ(expand_slurm_nodelist("gpu-a100-[009-011]"),
            (std::vector<std::string>{"gpu-a100-009", "gpu-a100-010", "gpu-a100-011"}));
  EXPECT_EQ(expand_slurm_nodelist("single"), (std::vector<std::string>{"single"}));
}

TEST(SlurmNodelist, FirstHost) {
  using clipper::dist::first_slurm_host;
  EXPECT_EQ(first_slurm_host("node[01-04,07]"), "node01");
  EXPECT_EQ(first_slurm_host("gpu[100-199],cpu1"), "gpu100");
  EXPECT_EQ(first_slurm_host("login2,node[1-3]"), "login2");
}

TEST(SlurmNodelist, MalformedListsAreErrors) {
  using clipper::dist::expand_slurm_nodelist;
  EXPECT_THROW(expand_slurm_nodelist("node[01-04"), InputError);
  EXPECT_THROW(expand_slurm_nodelist("node[4-1]"), InputError);
  EXPECT_THROW(expand_slurm_nodelist("node[a-b]"), InputError);
  EXPECT_THROW(expand_slurm_nodelist("a,,b"), InputError);
}

TEST(SlurmTasksPerNode, Expands) {
  EXPECT_EQ(clipper::dist::expand_slurm_tasks_per_node("4(x2),3"), (std::vector<int>{4, 4, 3}));
  EXPECT_EQ(clipper::dist::expand_slurm_tasks_per_node("8"), (std::vector<int>{8}));
  EXPECT_THROW(clipper::dist::expand_slurm_tasks_per_node("4(x"), InputError);
}

TEST(Launch, FreePortsDiffer) {
  const int a = clipper::dist::find_free_port();
  EXPECT_GT(a, 0);
  EXPECT_LT(a, 65536);
}

TEST(Launch, BadOptionsAreErrors) {
  clipper::dist::LaunchOptions o;
  EXPECT_THROW(clipper::dist::run_ranks(o), InputError);  // no command
  o.command = {"true"};
  o.nnodes = 2;
  o.node_rank = 2;
  EXPECT_THROW(clipper::dist::run_ranks(o), InputError);
  o.node_rank = 0;
  o.nproc_per_node = 0;
  EXPECT_THROW(clipper::dist::run_ranks(o), InputError);
}

}  // namespace

// Found by tests/fuzz/fuzz_world.cpp: a node number too long for 64 bits escaped as
// std::out_of_range instead of the host list's own error.
TEST(World, SlurmNumbersBeyond64BitsAreInputErrors) {
  EXPECT_THROW(clipper::dist::expand_slurm_nodelist("gpu[099999999999999999999999-1]"),
               clipper::core::InputError);
  EXPECT_THROW(clipper::dist::expand_slurm_nodelist("gpu[1-99999999999999999999]"),
               clipper::core::InputError);
}

// Found by tests/fuzz/fuzz_world.cpp: bracket groups multiply, and a list of a few hundred bytes
// named billions of hosts (minutes of expansion, then out of memory). At most 100,000 names.
TEST(World, SlurmListsNamingTooManyHostsAreInputErrors) {
  using clipper::dist::expand_slurm_nodelist;
  EXPECT_EQ(expand_slurm_nodelist("n[1-100000]").size(), 100000u);
  EXPECT_THROW(expand_slurm_nodelist("a[0-999]b[0-999]"), clipper::core::InputError);
  EXPECT_THROW(expand_slurm_nodelist("n[1-100000],m1"), clipper::core::InputError);
  EXPECT_THROW(expand_slurm_nodelist("n[1-60000,1-60000]"), clipper::core::InputError);
  EXPECT_THROW(expand_slurm_nodelist("n[]"), clipper::core::InputError);
  EXPECT_EQ(clipper::dist::first_slurm_host("a[7-999]b[3-999]c[0-999]d[0-999]"), "a7b3c0d0");
  EXPECT_EQ(expand_slurm_nodelist("r[1-2]x[9-10]y[3]"),
            (std::vector<std::string>{"r1x9y3", "r1x10y3", "r2x9y3", "r2x10y3"}));
}

// Found by tests/fuzz/fuzz_world.cpp (out of memory): 44,004 hosts, each named by a pattern of
// 1,700 characters. A host name is at most 255 characters, so 100,000 hosts stay small.
TEST(World, SlurmHostNamesLongerThan255AreInputErrors) {
  using clipper::dist::expand_slurm_nodelist;
  EXPECT_EQ(expand_slurm_nodelist(std::string(250, 'h') + "[1-9]").size(), 9u);
  EXPECT_THROW(expand_slurm_nodelist(std::string(250, 'h') + "[1-100000]"),
               clipper::core::InputError);
  EXPECT_THROW(expand_slurm_nodelist(std::string(300, 'h')), clipper::core::InputError);
  EXPECT_THROW(clipper::dist::first_slurm_host("a[1]" + std::string(300, 'h')),
               clipper::core::InputError);
}

TEST(World, SlurmTaskRepeatsBeyondTheHostLimitAreInputErrors) {
  using clipper::dist::expand_slurm_tasks_per_node;
  EXPECT_EQ(expand_slurm_tasks_per_node("2(x100000)").size(), 100000u);
  EXPECT_THROW(expand_slurm_tasks_per_node("4(x1000000)"), clipper::core::InputError);
  EXPECT_THROW(expand_slurm_tasks_per_node("4(x99999),2(x2)"), clipper::core::InputError);
  EXPECT_THROW(expand_slurm_tasks_per_node("4(x0)"), clipper::core::InputError);
}

// A hostile host list of megabytes is quoted in part: the message names the list and its length.
TEST(World, SlurmErrorsQuoteALongHostListInPart) {
  std::string list;
  for (int i = 0; i < 100000; ++i) list += "node" + std::to_string(i) + ",";
  list += "bad[x]";
  try {
    clipper::dist::expand_slurm_nodelist(list);
    FAIL() << "expected an InputError";
  } catch (const clipper::core::InputError& e) {
    const std::string what = e.what();
    EXPECT_LT(what.size(), 400u) << what.substr(0, 400);
    EXPECT_NE(what.find("SLURM host list 'node0,node1,"), std::string::npos) << what;
    EXPECT_NE(what.find("(" + std::to_string(list.size()) + " characters)"), std::string::npos)
        << what;
    EXPECT_NE(what.find("'x' is not a number"), std::string::npos) << what;
  }
}
