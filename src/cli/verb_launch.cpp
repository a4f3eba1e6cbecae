// clipper launch --nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P] --
// CMD ARGS... Starts this node's ranks with torchrun-compatible variables (see
// clipper/dist/launch.hpp). A CMD that names a clipper verb (train, eval, ...) runs this clipper
// binary.
#include <unistd.h>

#include <climits>
#include <memory>

#include "clipper/dist/launch.hpp"
#include "run_command.hpp"
#include "verbs.hpp"

namespace clipper::cli {

namespace {

std::string self_path() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "clipper";
  return std::string(buf, static_cast<std::size_t>(n));
}

bool is_verb(const CLI::App& root, const std::string& name) {
  for (const auto* sub : root.get_subcommands(std::function<bool(const CLI::App*)>()))
    if (sub->get_name() == name) return true;
  return false;
}

void setup_launch_verb(CLI::App& app, Action* action) {
  auto opts = std::make_shared<dist::LaunchOptions>();
  auto* verb = app.add_subcommand("launch",
                                  "Run N ranks on this node with torchrun-compatible variables: "
                                  "clipper launch --nproc-per-node 2 -- train cfg.yaml");
  verb->add_option("--nproc-per-node", opts->nproc_per_node, "ranks on this node (one per GPU)")
      ->required();
  verb->add_option("--nnodes", opts->nnodes, "nodes in the job")->capture_default_str();
  verb->add_option("--node-rank", opts->node_rank, "this node's index, 0 on the rendezvous host")
      ->capture_default_str();
  verb->add_option("--master-addr", opts->master_addr,
                   "rendezvous host (node 0), reachable from every node")
      ->capture_default_str();
  verb->add_option("--master-port", opts->master_port,
                   "rendezvous port; 0: a free one on one node, 29500 on several")
      ->capture_default_str();
  verb->add_option("--kill-grace", opts->kill_grace_s,
                   "seconds from a stop (a forwarded SIGINT/SIGTERM/SIGUSR1, the SIGTERM after a "
                   "rank failed, this launcher's death) to SIGKILL of the ranks still running")
      ->capture_default_str();
  verb->add_option("command", opts->command, "the program and its arguments, after --")->required();
  CLI::App* root = &app;
  verb->callback([opts, action, root] {
    *action = [opts, root] {
      auto o = *opts;
      export_launch_command();  // a rank's "continue with" line repeats this launcher's command
      // `-- train ...` runs this clipper's own verb.
      if (!o.command.empty() && o.command[0].find('/') == std::string::npos &&
          o.command[0] != "launch" && is_verb(*root, o.command[0]))
        o.command.insert(o.command.begin(), self_path());
      return dist::run_ranks(o).exit_code;
    };
  });
}

}  // namespace

CLIPPER_REGISTER_VERB(launch, setup_launch_verb);

}  // namespace clipper::cli
