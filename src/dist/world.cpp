#include "clipper/dist/world.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <limits>
#include <optional>
#include <sstream>

#include "clipper/config/config.hpp"
#include "clipper/core/error.hpp"
#include "clipper/core/text.hpp"

extern char** environ;

namespace clipper::dist {

using core::InputError;

std::string World::describe() const {
  std::ostringstream os;
  os << "rank " << rank << "/" << world_size << " (node " << node_rank << "/" << num_nodes
     << ", local " << local_rank << "/" << local_world_size << ")";
  return os.str();
}

Environment process_environment() {
  Environment env;
  for (char** e = environ; e && *e; ++e) {
    const std::string kv = *e;
    const auto eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return env;
}

namespace {

std::optional<std::string> get(const Environment& env, const std::string& name) {
  const auto it = env.find(name);
  if (it == env.end() || it->second.empty()) return std::nullopt;
  return it->second;
}

long long parse_int(const std::string& text, const std::string& what) {
  std::size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size())
    throw InputError(what + "='" + text + "' is not an integer");
  return v;
}

// parse_int narrowed to int, refused rather than wrapped when it does not fit.
int parse_small_int(const std::string& text, const std::string& what) {
  const long long v = parse_int(text, what);
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
    throw InputError(what + "='" + text + "' is out of range");
  return static_cast<int>(v);
}

std::optional<int> get_int(const Environment& env, const std::string& name) {
  const auto v = get(env, name);
  if (!v) return std::nullopt;
  return parse_small_int(*v, "environment variable " + name);
}

int require_int(const Environment& env, const std::string& name, const std::string& because) {
  const auto v = get_int(env, name);
  if (!v) throw InputError("environment variable " + name + " is not set, but " + because);
  return *v;
}

std::string first_set(const Environment& env, std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (auto v = get(env, n)) return *v;
  return {};
}

// Splits at commas outside brackets.
std::vector<std::string> split_top_level(const std::string& s, const std::string& whole) {
  std::vector<std::string> out;
  std::string cur;
  int depth = 0;
  for (char c : s) {
    if (c == '[') ++depth;
    if (c == ']') {
      if (--depth < 0)
        throw InputError("SLURM host list '" + core::abbreviated(whole) + "': unmatched ']'");
    }
    if (c == ',' && depth == 0) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (depth != 0)
    throw InputError("SLURM host list '" + core::abbreviated(whole) + "': unmatched '['");
  out.push_back(cur);
  return out;
}

// A SLURM job has far fewer nodes; the limit keeps a hostile list from expanding into millions of
// names (several bracket groups multiply: "a[0-999]b[0-999]c[0-999]" is 10^9 hosts).
constexpr std::size_t kMaxHosts = 100000;
// A host name is at most 255 characters (DNS); so 100,000 names stay within 25 MB.
constexpr std::size_t kMaxHostName = 255;

struct Range {
  long long first, last;
  std::size_t width;  // digits of the lower bound: "007-010" keeps leading zeros
};

// "01-04,07" -> [1, 4] [7, 7], width 2; nothing is expanded yet.
std::vector<Range> parse_ranges(const std::string& body, const std::string& whole) {
  std::vector<Range> out;
  std::stringstream ss(body);
  std::string part;
  while (std::getline(ss, part, ',')) {
    const auto dash = part.find('-');
    const std::string lo = part.substr(0, dash);
    const std::string hi = dash == std::string::npos ? lo : part.substr(dash + 1);
    auto digits = [&](const std::string& t) {
      if (t.empty() || t.size() > 18) return false;  // 18 digits: std::stoll cannot overflow
      for (char c : t)
        if (!std::isdigit(static_cast<unsigned char>(c))) return false;
      return true;
    };
    if (!digits(lo) || !digits(hi))
      throw InputError("SLURM host list '" + core::abbreviated(whole) + "': '" +
                       core::abbreviated(part) + "' is not a number or a range a-b");
    const long long a = std::stoll(lo), b = std::stoll(hi);
    if (b < a)
      throw InputError("SLURM host list '" + core::abbreviated(whole) + "': range '" +
                       core::abbreviated(part) + "' runs backwards");
    if (b - a > static_cast<long long>(kMaxHosts))
      throw InputError("SLURM host list '" + core::abbreviated(whole) + "': range '" +
                       core::abbreviated(part) + "' is too long");
    out.push_back({a, b, lo.size()});
  }
  if (out.empty())
    throw InputError("SLURM host list '" + core::abbreviated(whole) + "': empty brackets '[]'");
  return out;
}

// One host pattern split at its bracket groups: "rack[1-2]-n[3-4]" is the texts "rack", "-n", ""
// around the groups [1-2] and [3-4].
struct HostPattern {
  std::vector<std::string> texts;  // one more than groups
  std::vector<std::vector<Range>> groups;
};

HostPattern parse_host(const std::string& pattern, const std::string& whole) {
  HostPattern p;
  std::size_t at = 0;
  for (auto open = pattern.find('['); open != std::string::npos; open = pattern.find('[', at)) {
    const auto close = pattern.find(']', open);
    if (close == std::string::npos)
      throw InputError("SLURM host list '" + core::abbreviated(whole) + "': unmatched '['");
    p.texts.push_back(pattern.substr(at, open - at));
    p.groups.push_back(parse_ranges(pattern.substr(open + 1, close - open - 1), whole));
    at = close + 1;
  }
  p.texts.push_back(pattern.substr(at));
  std::size_t longest = 0;  // the longest name the pattern makes
  for (const auto& t : p.texts) longest += t.size();
  for (const auto& g : p.groups) {
    std::size_t widest = 0;
    for (const auto& r : g) widest = std::max({widest, r.width, std::to_string(r.last).size()});
    longest += widest;
  }
  if (longest > kMaxHostName)
    throw InputError("SLURM host list '" + core::abbreviated(whole) +
                     "': a host name would be longer than " + std::to_string(kMaxHostName) +
                     " characters");
  return p;
}

// How many names the pattern makes, checked against what may still be added (no overflow).
std::size_t host_count(const HostPattern& p, std::size_t room, const std::string& whole) {
  auto too_many = [&] {
    return InputError("SLURM host list '" + core::abbreviated(whole) + "' names more than " +
                      std::to_string(kMaxHosts) + " hosts");
  };
  std::size_t n = 1;
  for (const auto& g : p.groups) {
    std::size_t in_group = 0;  // at least 1: parse_ranges refuses empty brackets
    for (const auto& r : g) in_group += static_cast<std::size_t>(r.last - r.first) + 1;
    if (in_group > room / n) throw too_many();
    n *= in_group;
  }
  if (n > room) throw too_many();
  return n;
}

std::string padded(long long i, std::size_t width) {
  std::string n = std::to_string(i);
  if (n.size() < width) n.insert(0, width - n.size(), '0');
  return n;
}

// The first `count` names of a pattern, earlier groups varying slowest: each name is made once
// (an odometer over the groups' values), not copied once per group.
std::vector<std::string> expand_host(const HostPattern& p, std::size_t count) {
  std::vector<std::vector<std::string>> values;  // each group's numbers as written
  for (const auto& g : p.groups) {
    auto& v = values.emplace_back();
    for (const auto& r : g)
      for (long long i = r.first; i <= r.last && v.size() < count; ++i)
        v.push_back(padded(i, r.width));
  }
  std::vector<std::string> out;
  out.reserve(count);
  std::vector<std::size_t> at(values.size(), 0);
  while (out.size() < count) {
    std::string name = p.texts[0];
    for (std::size_t g = 0; g < values.size(); ++g)
      name.append(values[g][at[g]]).append(p.texts[g + 1]);
    out.push_back(std::move(name));
    std::size_t g = values.size();
    while (g > 0 && ++at[g - 1] == values[g - 1].size()) at[--g] = 0;
    if (g == 0) break;
  }
  return out;
}

}  // namespace

std::vector<std::string> expand_slurm_nodelist(const std::string& nodelist) {
  std::vector<std::string> hosts;
  for (const auto& item : split_top_level(nodelist, nodelist)) {
    if (item.empty())
      throw InputError("SLURM host list '" + core::abbreviated(nodelist) + "': empty host name");
    const auto pattern = parse_host(item, nodelist);
    const auto count = host_count(pattern, kMaxHosts - hosts.size(), nodelist);
    for (auto& h : expand_host(pattern, count)) hosts.push_back(std::move(h));
  }
  return hosts;
}

std::string first_slurm_host(const std::string& nodelist) {
  const auto items = split_top_level(nodelist, nodelist);
  if (items.empty() || items[0].empty())
    throw InputError("SLURM host list '" + core::abbreviated(nodelist) + "': empty host name");
  return expand_host(parse_host(items[0], nodelist), 1).at(0);
}

std::vector<int> expand_slurm_tasks_per_node(const std::string& spec) {
  std::vector<int> out;
  std::stringstream ss(spec);
  std::string part;
  while (std::getline(ss, part, ',')) {
    const auto paren = part.find("(x");
    int count = 1;
    std::string n = part;
    if (paren != std::string::npos) {
      if (part.back() != ')')
        throw InputError("SLURM_TASKS_PER_NODE='" + core::abbreviated(spec) +
                         "': expected N or N(xM)");
      n = part.substr(0, paren);
      const long long repeat =
          parse_int(part.substr(paren + 2, part.size() - paren - 3), "SLURM_TASKS_PER_NODE repeat");
      // One entry per node: no more than a host list may name.
      if (repeat < 1 || repeat > static_cast<long long>(kMaxHosts - out.size()))
        throw InputError("SLURM_TASKS_PER_NODE='" + core::abbreviated(spec) + "': repeat " +
                         std::to_string(repeat) + " is not in [1, " + std::to_string(kMaxHosts) +
                         "] nodes");
      count = static_cast<int>(repeat);
    }
    const int tasks = parse_small_int(n, "SLURM_TASKS_PER_NODE entry");
    if (out.size() >= kMaxHosts)
      throw InputError("SLURM_TASKS_PER_NODE='" + core::abbreviated(spec) + "' names more than " +
                       std::to_string(kMaxHosts) + " nodes");
    for (int i = 0; i < count; ++i) out.push_back(tasks);
  }
  return out;
}

namespace {

void check_world(const World& w, const std::string& vars) {
  auto fail = [&](const std::string& what) {
    throw InputError("inconsistent launcher variables (" + vars + "): " + what);
  };
  if (w.world_size < 1) fail("world size " + std::to_string(w.world_size) + " is below 1");
  if (w.rank < 0 || w.rank >= w.world_size)
    fail("rank " + std::to_string(w.rank) + " is outside the world of " +
         std::to_string(w.world_size));
  if (w.local_world_size < 1 || w.local_world_size > w.world_size)
    fail("local world size " + std::to_string(w.local_world_size) + " is not in [1, " +
         std::to_string(w.world_size) + "]");
  if (w.local_rank < 0 || w.local_rank >= w.local_world_size)
    fail("local rank " + std::to_string(w.local_rank) + " is outside the local world of " +
         std::to_string(w.local_world_size));
  if (w.local_rank > w.rank)
    fail("local rank " + std::to_string(w.local_rank) + " is above the global rank " +
         std::to_string(w.rank));
  if (w.num_nodes < 1 || w.node_rank < 0 || w.node_rank >= w.num_nodes)
    fail("node rank " + std::to_string(w.node_rank) + " is outside " + std::to_string(w.num_nodes) +
         " node(s)");
}

// A second launcher's variables describing the same world must agree with the first's.
void cross_check(const Environment& env, const World& w, const char* rank_var,
                 const char* size_var) {
  const auto r = get_int(env, rank_var);
  const auto s = get_int(env, size_var);
  if (r && s && *s == w.world_size && *r != w.rank)
    throw InputError(std::string("inconsistent launcher variables: ") + rank_var + "=" +
                     std::to_string(*r) + " but " + (w.source == "torchrun" ? "RANK" : "the rank") +
                     "=" + std::to_string(w.rank) + " in a world of " +
                     std::to_string(w.world_size));
}

std::string master_addr_or_local(const Environment& env, const World& w,
                                 const config::DistConfig& cfg, const std::string& how) {
  if (!cfg.master_addr.empty()) return cfg.master_addr;
  if (auto a = get(env, "MASTER_ADDR")) return *a;
  if (w.num_nodes > 1)
    throw InputError("the job spans " + std::to_string(w.num_nodes) + " nodes (" + how +
                     ") but no rendezvous host is known: set MASTER_ADDR or dist.master_addr to "
                     "the host of rank 0");
  return "127.0.0.1";
}

}  // namespace

namespace {

// The SLURM step of an srun task; the batch script itself (step "batch" = 0xfffffffe) and the
// extern step are no srun tasks.
std::optional<std::string> srun_step(const Environment& env) {
  std::optional<std::string> step = get(env, "SLURM_STEP_ID");
  if (!step) step = get(env, "SLURM_STEPID");
  if (!get(env, "SLURM_PROCID") || !step || *step == "4294967294" || *step == "4294967295")
    return std::nullopt;
  return step;
}

const char* slurm_size_var(const Environment& env) {
  return get(env, "SLURM_STEP_NUM_TASKS") ? "SLURM_STEP_NUM_TASKS" : "SLURM_NTASKS";
}

// Node rank and count for launchers that put local_world_size ranks on every node, unless the
// launcher states them. A local size below 1 is left for check_world to report.
void nodes_of_equal_size(World& w, std::optional<int> node_rank = {},
                         std::optional<int> num_nodes = {}) {
  if (w.local_world_size < 1) return;
  w.node_rank = node_rank.value_or(w.rank / w.local_world_size);
  w.num_nodes = num_nodes.value_or((w.world_size + w.local_world_size - 1) / w.local_world_size);
}

World torchrun_world(const config::DistConfig& cfg, const Environment& env, bool slurm) {
  World w;
  w.source = "torchrun";
  w.rank = require_int(env, "RANK", "WORLD_SIZE is");
  w.world_size = require_int(env, "WORLD_SIZE", "RANK is");
  // Without local variables the ranks are taken to share one node.
  w.local_rank = get_int(env, "LOCAL_RANK").value_or(w.rank);
  w.local_world_size = get_int(env, "LOCAL_WORLD_SIZE").value_or(w.world_size);
  nodes_of_equal_size(w, get_int(env, "GROUP_RANK"), get_int(env, "GROUP_WORLD_SIZE"));
  check_world(w, "RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE");
  cross_check(env, w, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE");
  if (slurm) cross_check(env, w, "SLURM_PROCID", slurm_size_var(env));
  w.master_addr = master_addr_or_local(env, w, cfg, "torchrun variables");
  w.master_port = get_int(env, "MASTER_PORT").value_or(29500);
  if (auto a = get(env, "TORCHELASTIC_USE_AGENT_STORE"))
    w.agent_store = (*a == "True" || *a == "1" || *a == "true");
  w.store_prefix = "clipper/" + get(env, "TORCHELASTIC_RESTART_COUNT").value_or("0") + "/";
  return w;
}

World openmpi_world(const config::DistConfig& cfg, const Environment& env, bool slurm) {
  World w;
  w.source = "openmpi";
  w.rank = require_int(env, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE is");
  w.world_size = require_int(env, "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK is");
  w.local_rank = get_int(env, "OMPI_COMM_WORLD_LOCAL_RANK").value_or(w.rank);
  w.local_world_size = get_int(env, "OMPI_COMM_WORLD_LOCAL_SIZE").value_or(w.world_size);
  nodes_of_equal_size(w);
  check_world(w, "OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE");
  if (slurm) cross_check(env, w, "SLURM_PROCID", slurm_size_var(env));
  w.master_addr = master_addr_or_local(env, w, cfg, "Open MPI variables");
  w.master_port = get_int(env, "MASTER_PORT").value_or(29500);
  return w;
}

constexpr const char* kSlurmVars =
    "SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID, SLURM_TASKS_PER_NODE";

// Tasks on this node and the node count, from SLURM_(STEP_)TASKS_PER_NODE when it is set.
void slurm_local_size(const Environment& env, World& w, const char* size_var) {
  const std::string tpn = first_set(env, {"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"});
  if (tpn.empty()) {
    const auto n = get_int(env, "SLURM_NTASKS_PER_NODE");
    w.local_world_size = n ? static_cast<int>(*n) : w.num_nodes == 1 ? w.world_size : 1;
    return;
  }
  const auto per_node = expand_slurm_tasks_per_node(tpn);
  if (w.node_rank < 0 || w.node_rank >= static_cast<int>(per_node.size()))
    throw InputError(std::string("inconsistent launcher variables (") + kSlurmVars +
                     "): SLURM_NODEID=" + std::to_string(w.node_rank) +
                     " but the tasks per node '" + tpn + "' list " +
                     std::to_string(per_node.size()) + " node(s)");
  w.local_world_size = per_node[w.node_rank];
  int total = 0;
  for (int t : per_node) total += t;
  if (total != w.world_size)
    throw InputError(std::string("inconsistent launcher variables (") + kSlurmVars +
                     "): " + size_var + "=" + std::to_string(w.world_size) +
                     " but the tasks per node '" + tpn + "' add up to " + std::to_string(total));
  w.num_nodes = static_cast<int>(per_node.size());
}

void slurm_rendezvous(const config::DistConfig& cfg, const Environment& env, World& w) {
  if (!cfg.master_addr.empty()) {
    w.master_addr = cfg.master_addr;
  } else if (auto a = get(env, "MASTER_ADDR")) {
    w.master_addr = *a;
  } else {
    const std::string nodes =
        first_set(env, {"SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"});
    if (nodes.empty() && w.num_nodes > 1)
      throw InputError("SLURM job on " + std::to_string(w.num_nodes) +
                       " nodes without SLURM_JOB_NODELIST: set MASTER_ADDR or dist.master_addr");
    w.master_addr = nodes.empty() ? "127.0.0.1" : first_slurm_host(nodes);
  }
  // Jobs sharing a node must not share a port: derive one from the job id unless told.
  if (auto p = get_int(env, "MASTER_PORT")) {
    w.master_port = static_cast<int>(*p);
  } else if (auto job = get(env, "SLURM_JOB_ID")) {
    w.master_port =
        20000 + static_cast<int>(parse_int(*job, "environment variable SLURM_JOB_ID") % 10000);
  }
}

World slurm_world(const config::DistConfig& cfg, const Environment& env, const std::string& step) {
  World w;
  w.source = "slurm";
  w.rank = require_int(env, "SLURM_PROCID", "this is an srun task");
  const char* size_var = slurm_size_var(env);
  w.world_size = require_int(env, size_var, "SLURM_PROCID is set");
  w.local_rank = get_int(env, "SLURM_LOCALID").value_or(0);
  w.node_rank = get_int(env, "SLURM_NODEID").value_or(0);
  w.num_nodes = get_int(env, "SLURM_STEP_NUM_NODES")
                    .value_or(get_int(env, "SLURM_NNODES")
                                  .value_or(get_int(env, "SLURM_JOB_NUM_NODES").value_or(1)));
  slurm_local_size(env, w, size_var);
  check_world(w, kSlurmVars);
  slurm_rendezvous(cfg, env, w);
  w.store_prefix = "clipper/" + get(env, "SLURM_JOB_ID").value_or("0") + "." + step + "/";
  return w;
}

}  // namespace

World discover_world(const config::DistConfig& cfg, const Environment& env) {
  const auto step = srun_step(env);
  World w;
  if (get(env, "RANK") || get(env, "WORLD_SIZE"))
    w = torchrun_world(cfg, env, step.has_value());
  else if (get(env, "OMPI_COMM_WORLD_RANK") || get(env, "OMPI_COMM_WORLD_SIZE"))
    w = openmpi_world(cfg, env, step.has_value());
  else if (step)
    w = slurm_world(cfg, env, *step);
  if (cfg.master_port > 0) w.master_port = static_cast<int>(cfg.master_port);
  if (!cfg.master_addr.empty()) w.master_addr = cfg.master_addr;
  if (w.master_port < 1 || w.master_port > 65535)
    throw InputError("rendezvous port " + std::to_string(w.master_port) +
                     " (MASTER_PORT or dist.master_port) is not in [1, 65535]");
  return w;
}

World discover_world(const config::DistConfig& cfg) {
  return discover_world(cfg, process_environment());
}

}  // namespace clipper::dist
