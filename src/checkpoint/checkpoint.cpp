#include "clipper/checkpoint/checkpoint.hpp"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <map>
#include <random>
#include <thread>
#include <tuple>

#include "clipper/checkpoint/sync.hpp"
#include "clipper/core/atomic_file.hpp"
#include "clipper/core/digest.hpp"
#include "clipper/core/error.hpp"
#include "clipper/core/log.hpp"
#include "clipper/dist/process_group.hpp"
#include "clipper/io/safetensors.hpp"
#include "folder.hpp"

namespace fs = std::filesystem;

namespace clipper::checkpoint {
namespace {

using core::FileDigest;
using core::InputError;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

constexpr const char* kPrefix = "step_";
using folder::kTmpPrefix;

std::string rank_name(int rank, const char* ext) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "rank_%05d.%s", rank, ext);
  return buf;
}

Json read_json(const std::string& path) {
  const std::string text = core::read_file(path);
  try {
    return Json::parse(text);
  } catch (const Json::exception& e) {
    throw InputError("'" + path + "' is not valid JSON: " + e.what());
  }
}

// Runs `f` on this rank, then every rank learns whether any rank failed: the one that failed
// rethrows its own error, the others throw one that names it. This is also the barrier of each
// phase, so a rank-0 failure reaches everyone at once instead of after a collective timeout.
template <class F>
void on_every_rank(dist::ProcessGroup& pg, const std::string& what, F&& f) {
  std::exception_ptr error;
  try {
    f();
  } catch (...) {
    error = std::current_exception();
  }
  const std::int64_t failed =
      pg.all_reduce_int(error ? pg.rank() + 1 : 0, dist::ReduceOp::max, "checkpoint " + what);
  if (error) std::rethrow_exception(error);
  if (failed > 0)
    throw core::Error("checkpoint " + what + " failed on rank " + std::to_string(failed - 1) +
                      " (its log says why)");
}

// A part's files inside the folder.
struct PartFiles {
  std::string tensors, json;
};

PartFiles global_files(const std::string& part) {
  return {part + ".safetensors", part + ".json"};
}

// Every rank's per-rank parts in one pair of files; tensors are named "<part>/<tensor>".
FileDigest write_rank_tensors(const fs::path& tmp, int rank, const Parts& parts,
                              std::vector<PartState>& states) {
  TensorList all;
  for (std::size_t i = 0; i < parts.size(); ++i)
    if (parts[i].scope == Scope::per_rank)
      for (const auto& [name, t] : states[i].tensors)
        all.emplace_back(parts[i].name + "/" + name, t);
  return io::save_safetensors((tmp / rank_name(rank, "safetensors")).string(), all);
}

FileDigest write_rank_json(const fs::path& tmp, int rank, const Parts& parts,
                           const std::vector<PartState>& states) {
  Json j = Json::object();
  for (std::size_t i = 0; i < parts.size(); ++i)
    if (parts[i].scope == Scope::per_rank) j[parts[i].name] = states[i].json;
  return core::write_file_atomic((tmp / rank_name(rank, "json")).string(), j.dump(1));
}

using Digests = std::vector<std::pair<std::string, FileDigest>>;

Digests write_global_parts(const fs::path& tmp, const Parts& parts,
                           const std::vector<PartState>& states, const std::string& config_yaml) {
  Digests out;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (parts[i].scope != Scope::global) continue;
    const auto files = global_files(parts[i].name);
    if (!states[i].tensors.empty())
      out.emplace_back(files.tensors,
                       io::save_safetensors((tmp / files.tensors).string(), states[i].tensors));
    if (!states[i].json.is_null())
      out.emplace_back(
          files.json, core::write_file_atomic((tmp / files.json).string(), states[i].json.dump(1)));
  }
  out.emplace_back("config.yaml",
                   core::write_file_atomic((tmp / "config.yaml").string(), config_yaml));
  return out;
}

// Rank 0 learns the size and CRC of every rank's files: [size, crc] x 2 per rank.
Digests gather_rank_digests(dist::ProcessGroup& pg, FileDigest tensors, FileDigest json) {
  at::Tensor mine =
      at::tensor({static_cast<std::int64_t>(tensors.size), static_cast<std::int64_t>(tensors.crc32),
                  static_cast<std::int64_t>(json.size), static_cast<std::int64_t>(json.crc32)},
                 at::kLong);
  const at::Tensor all = pg.all_gather(mine, "checkpoint file digests").cpu();
  const auto* v = all.data_ptr<std::int64_t>();
  Digests out;
  for (int r = 0; r < pg.size(); ++r) {
    const auto* d = v + 4 * r;
    out.emplace_back(rank_name(r, "safetensors"), FileDigest{static_cast<std::uint64_t>(d[0]),
                                                             static_cast<std::uint32_t>(d[1])});
    out.emplace_back(rank_name(r, "json"), FileDigest{static_cast<std::uint64_t>(d[2]),
                                                      static_cast<std::uint32_t>(d[3])});
  }
  return out;
}

// Rank 0, before the commit: every rank's files are in the folder as rank 0 sees it, with the
// sizes that rank wrote (and the CRC of the small JSON ones). A run folder that is not shared
// between the ranks fails here, so a checkpoint that cannot be resumed is never committed.
void check_rank_files(const fs::path& tmp, const Digests& ranks) {
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    const auto& [name, wrote] = ranks[i];
    const fs::path f = tmp / name;
    const std::string who = "rank " + std::to_string(i / 2) + " wrote " + name + " (" +
                            std::to_string(wrote.size) + " bytes), but rank 0 ";
    const std::string why =
        ": is the run folder shared between the ranks? Every rank must see the same folder (a "
        "shared file system, at the same path: an absolute train.output_dir, or every node "
        "launched from the same working folder). Nothing was committed.";
    std::error_code ec;
    const auto size = fs::file_size(f, ec);
    if (ec)
      throw core::Error("checkpoint '" + tmp.string() + "': " + who + "does not see " + f.string() +
                        why);
    const bool small = name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0;
    if (size != wrote.size || (small && core::digest_of_file(f.string()).crc32 != wrote.crc32))
      throw core::Error("checkpoint '" + tmp.string() + "': " + who + "sees another file there (" +
                        std::to_string(size) + " bytes)" + why);
  }
}

Json make_manifest(std::int64_t step, std::int64_t sequence, int world_size, const Parts& parts,
                   Digests digests) {
  nlohmann::ordered_json m;
  m["magic"] = kMagic;
  m["format_version"] = kFormatVersion;
  m["step"] = step;
  m["sequence"] = sequence;
  m["world_size"] = world_size;
  nlohmann::ordered_json scopes = nlohmann::ordered_json::object();
  for (const auto& p : parts) scopes[p.name] = p.scope == Scope::global ? "global" : "per_rank";
  m["parts"] = scopes;
  std::sort(digests.begin(), digests.end());
  nlohmann::ordered_json files = nlohmann::ordered_json::object();
  for (const auto& [name, d] : digests) files[name] = {{"size", d.size}, {"crc32", d.crc32}};
  m["files"] = files;
  return Json::parse(m.dump());
}

// Checks one file against its manifest entry.
void check_file(const fs::path& dir, const std::string& name, const Json& info, bool check_crc) {
  // Names come from the manifest: they stay inside the folder.
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos)
    throw InputError("checkpoint '" + dir.string() + "': manifest.json lists '" + name +
                     "', not a plain file name");
  const std::string p = (dir / name).string();
  if (!fs::exists(p)) throw InputError("checkpoint file '" + p + "' is missing");
  const auto want_size = info.at("size").get<std::uint64_t>();
  const auto size = static_cast<std::uint64_t>(fs::file_size(p));
  if (size != want_size)
    throw InputError("checkpoint file '" + p + "' has " + std::to_string(size) +
                     " bytes, manifest says " + std::to_string(want_size) + " (truncated?)");
  if (check_crc && core::digest_of_file(p).crc32 != info.at("crc32").get<std::uint32_t>())
    throw InputError("checkpoint file '" + p + "' fails its CRC-32 check (corrupted)");
}

Json read_manifest(const std::string& dir) {
  const std::string mpath = (fs::path(dir) / "manifest.json").string();
  if (!fs::exists(mpath))
    throw InputError("checkpoint '" + dir + "' has no manifest.json (an interrupted save)");
  const Json m = read_json(mpath);
  if (!m.is_object() || m.value("magic", "") != kMagic)
    throw InputError("'" + mpath + "': magic is not '" + std::string(kMagic) + "'");
  const int version = m.value("format_version", -1);
  if (version != 1 && version != kFormatVersion)
    throw InputError("'" + mpath + "': format_version " + std::to_string(version) +
                     ", this clipper reads 1 and " + std::to_string(kFormatVersion));
  if (!m.contains("files") || !m["files"].is_object())
    throw InputError("'" + mpath + "' lists no files");
  if (!m.contains("step") || !m["step"].is_number_integer() || !m.contains("world_size") ||
      !m["world_size"].is_number_integer())
    throw InputError("'" + mpath + "' has no integer step and world_size");
  return m;
}

std::int64_t sequence_of(const Json& m) {
  // Format 1 had no sequence: its checkpoints come before any of format 2, in step order.
  const auto it = m.find("sequence");
  return it != m.end() && it->is_number_integer() ? it->get<std::int64_t>() : 0;
}

// Format 1 named per-rank tensors without their part: they were the RNG states.
std::string rank_tensor_part(const std::string& name, std::string* tensor) {
  const auto slash = name.find('/');
  if (slash == std::string::npos) {
    *tensor = name;
    return "rng";
  }
  *tensor = name.substr(slash + 1);
  return name.substr(0, slash);
}

}  // namespace

std::string step_dir_name(std::int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s%08lld", kPrefix, static_cast<long long>(step));
  return buf;
}

std::optional<std::int64_t> step_of(const std::string& dir) {
  const std::string name = fs::path(dir).filename().string();
  const std::string digits = name.rfind(kPrefix, 0) == 0 ? name.substr(5) : "";
  if (digits.empty() || digits.size() > 18 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::stoll(digits);
}

nlohmann::json validate(const std::string& dir, bool check_crc) {
  try {
    const Json m = read_manifest(dir);
    for (const auto& [name, info] : m["files"].items()) check_file(dir, name, info, check_crc);
    return m;
  } catch (const Json::exception& e) {
    throw InputError("checkpoint '" + dir + "': malformed manifest.json (" + e.what() + ")");
  } catch (const fs::filesystem_error& e) {
    throw InputError("checkpoint '" + dir + "': " + e.what());
  }
}

std::vector<Found> list_committed(const std::string& checkpoints_dir) {
  std::vector<Found> out;
  std::error_code ec;
  if (!fs::is_directory(checkpoints_dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(checkpoints_dir, ec)) {
    const auto step = step_of(e.path().string());
    if (!step || !e.is_directory(ec)) continue;
    try {
      const Json m = read_manifest(e.path().string());
      out.push_back({e.path().string(), *step, sequence_of(m)});
    } catch (const std::exception& err) {
      CLIPPER_WARN("skipping checkpoint " << e.path().string() << ": " << err.what());
    }
  }
  std::sort(out.begin(), out.end(), [](const Found& a, const Found& b) {
    return std::tie(a.sequence, a.step) < std::tie(b.sequence, b.step);
  });
  return out;
}

// A save between its start and its commit. The writer thread owns `states` (host copies when
// async) and the digests until `done`; the training thread reads them only after that.
struct Manager::Pending {
  std::int64_t step = 0;
  fs::path tmp, final_dir;
  Parts parts;  // names and scopes; the writer never calls state()
  std::vector<PartState> states;
  std::string config_yaml;
  std::vector<c10::Event> copies;  // device-to-host copies the writer waits for
  FileDigest rank_tensors, rank_json;
  Digests global;
  std::exception_ptr error;
  std::atomic<bool> done{false};
  bool async = false;
  double blocked_s = 0, write_s = 0;
  std::int64_t polls = 0;
  std::thread writer;
};

namespace {

// A copy the training loop cannot change. CUDA tensors go to pinned host memory without waiting
// (the copies queue on the current stream before any later update; `copies` records them).
at::Tensor host_copy(const at::Tensor& t, std::vector<c10::Event>& copies) {
  const at::Tensor src = t.detach();
  if (!src.is_cuda()) return src.clone(at::MemoryFormat::Contiguous);
  at::Tensor dst = at::empty(src.sizes(), src.options().device(at::kCPU).pinned_memory(true));
  dst.copy_(src, /*non_blocking=*/true);
  const auto* impl = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
  copies.emplace_back(c10::DeviceType::CUDA);
  copies.back().record(impl->getStream(src.device()));
  return dst;
}

PartState host_copy(PartState s, std::vector<c10::Event>& copies) {
  for (auto& [name, t] : s.tensors) t = host_copy(t, copies);
  return s;
}

// Runs on the writer thread (or inline when synchronous); errors wait in p.error for the commit.
void write_files(Manager::Pending& p, int rank) {
  const auto t = Clock::now();
  try {
    for (const auto& e : p.copies) e.synchronize();
    p.rank_tensors = write_rank_tensors(p.tmp, rank, p.parts, p.states);
    p.rank_json = write_rank_json(p.tmp, rank, p.parts, p.states);
    if (rank == 0) p.global = write_global_parts(p.tmp, p.parts, p.states, p.config_yaml);
  } catch (...) {
    p.error = std::current_exception();
  }
  p.states.clear();  // the host copy goes as soon as it is on disk
  p.write_s = since(t);
  p.done = true;
}

}  // namespace

Manager::Manager(std::string run_dir, ManagerOptions options,
                 std::shared_ptr<dist::ProcessGroup> pg)
    : dir_((fs::path(run_dir) / "checkpoints").string()),
      options_(std::move(options)),
      pg_(std::move(pg)) {
  if (!options_.sync_command.empty() && pg_->rank() == 0)
    sync_ = std::make_unique<BackgroundSync>(options_.sync_command, options_.sync_log);
}

Manager::~Manager() {
  if (pending_ && pending_->writer.joinable()) pending_->writer.join();
}

std::string Manager::save(std::int64_t step, const Parts& parts, const std::string& config_yaml) {
  wait();  // at most one save in flight
  const auto t = Clock::now();
  auto p = begin_save(step, parts, config_yaml);
  const std::string dir = p->final_dir.string();
  if (!p->async) {
    write_files(*p, pg_->rank());
    p->blocked_s = since(t);
    pending_ = std::move(p);
    commit_pending();
    return dir;
  }
  pending_ = std::move(p);
  pending_->writer = std::thread([p = pending_.get(), rank = pg_->rank()] {
    // Below the training threads: on a busy CPU the write takes idle cycles, not a core (on
    // Linux a thread has its own nice value; the write-back it causes counts for it too).
    setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 10);
    write_files(*p, rank);
  });
  pending_->blocked_s = since(t);
  return dir;
}

// Collective: the temporary folder, then this rank's parts (copied to host memory when async).
std::unique_ptr<Manager::Pending> Manager::begin_save(std::int64_t step, const Parts& parts,
                                                      const std::string& config_yaml) {
  dist::ScopedTimeout timeout(*pg_, options_.timeout_s);
  const int rank = pg_->rank();
  auto p = std::make_unique<Pending>();
  p->step = step;
  p->async = options_.async;
  p->parts = parts;
  p->config_yaml = config_yaml;
  p->final_dir = fs::path(dir_) / step_dir_name(step);
  p->tmp = fs::path(dir_) / (kTmpPrefix + step_dir_name(step).substr(5));
  on_every_rank(*pg_, "save: creating " + p->tmp.string(), [&] {
    if (rank != 0) return;
    core::make_private_dirs(dir_);
    fs::remove_all(p->tmp);  // a leftover of an interrupted save
    core::make_private_dirs(p->tmp.string());
  });
  on_every_rank(*pg_, "save: state of the parts for " + p->tmp.string(), [&] {
    p->states.resize(parts.size());
    for (std::size_t i = 0; i < parts.size(); ++i) {
      if (parts[i].scope != Scope::per_rank && rank != 0) continue;
      p->states[i] = parts[i].state->state();
      if (p->async) p->states[i] = host_copy(std::move(p->states[i]), p->copies);
    }
  });
  return p;
}

void Manager::poll() {
  if (!pending_) return;
  if (pg_->size() == 1) {
    if (pending_->done) commit_pending();
    return;
  }
  if (++pending_->polls % std::max<std::int64_t>(1, options_.poll_every) != 0) return;
  const auto t = Clock::now();
  const bool everyone = pg_->all(pending_->done.load());
  pending_->blocked_s += since(t);
  if (everyone) commit_pending();
}

void Manager::wait() {
  if (!pending_) return;
  const auto t = Clock::now();
  if (pending_->writer.joinable()) pending_->writer.join();
  pending_->blocked_s += since(t);
  commit_pending();
}

SyncCounts Manager::sync_counts() const {
  return sync_ ? SyncCounts{sync_->runs(), sync_->failures()} : SyncCounts{};
}

void Manager::finish(bool stopping) {
  wait();
  if (!sync_) return;
  const auto t = Clock::now();
  bool finished = true;
  if (stopping)
    finished = sync_->wait_at_most(options_.sync_stop_timeout_s);
  else
    sync_->wait();
  const SyncCounts c = sync_counts();
  CLIPPER_INFO("checkpoint sync: "
               << c.runs << " run(s), " << c.failures << " failed (waited " << std::fixed
               << std::setprecision(1) << since(t) << " s for the last one"
               << (finished ? "" : ", then killed it: the run is stopping") << ")");
}

namespace {

// "host:/absolute/folder", the folder as this process sees it.
std::string view_of(const std::string& dir) {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  std::error_code ec;
  return std::string(host) + ":" + fs::absolute(dir, ec).lexically_normal().string();
}

std::string probe_token() {
  std::random_device rd;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
  return buf;
}

}  // namespace

void Manager::check_shared() {
  if (pg_->size() == 1) return;
  dist::ScopedTimeout timeout(*pg_, options_.timeout_s);
  const int rank = pg_->rank();
  const std::string token = pg_->broadcast_string(rank == 0 ? probe_token() : "", 0);
  const auto probe = [&](int r) {
    return fs::path(dir_) / (".probe-" + token + "-" + rank_name(r, "txt"));
  };
  on_every_rank(*pg_, "probe: creating " + dir_, [&] {
    if (rank == 0) core::make_private_dirs(dir_);
  });
  on_every_rank(*pg_, "probe: writing " + probe(rank).string(), [&] {
    core::make_private_dirs(dir_);
    core::write_file_atomic(probe(rank).string(), view_of(dir_));
  });
  // Rank 0: the first rank whose probe it cannot see (-1: none) and how many it cannot see.
  std::int64_t first = -1, unseen = 0;
  for (int r = 0; rank == 0 && r < pg_->size(); ++r) {
    std::error_code ec;
    if (fs::exists(probe(r), ec)) continue;
    if (first < 0) first = r;
    ++unseen;
  }
  first = pg_->all_reduce_int(rank == 0 ? first : -1, dist::ReduceOp::max, "checkpoint probe");
  unseen = pg_->all_reduce_int(rank == 0 ? unseen : 0, dist::ReduceOp::max, "checkpoint probe");
  std::error_code ec;
  fs::remove(probe(rank), ec);
  if (first < 0) return;
  const int other = static_cast<int>(first);
  const std::string theirs = pg_->broadcast_string(rank == other ? view_of(dir_) : "", other);
  const std::string ours = pg_->broadcast_string(rank == 0 ? view_of(dir_) : "", 0);
  throw InputError(
      "the checkpoints folder is not shared between the ranks: rank 0 writes to " + ours +
      ", rank " + std::to_string(other) + " to " + theirs + " (rank 0 sees the probe file of " +
      std::to_string(pg_->size() - unseen) + " of " + std::to_string(pg_->size()) +
      " ranks); a checkpoint needs every rank's files in one folder: put train.output_dir on a "
      "file system every node sees, at the same path (an absolute path, or launch every node "
      "from the same working folder)");
}

// Collective, once every rank's writer is done: every rank learns whether all files are on disk,
// rank 0 gathers their digests, writes the manifest and renames the folder into place.
void Manager::commit_pending() {
  const std::unique_ptr<Pending> owned = std::move(pending_);  // this save ends here either way
  Pending& p = *owned;
  if (p.writer.joinable()) p.writer.join();
  const auto t = Clock::now();
  dist::ScopedTimeout timeout(*pg_, options_.timeout_s);
  on_every_rank(*pg_, "save: writing " + p.tmp.string(), [&] {
    if (p.error) std::rethrow_exception(p.error);
  });
  Digests all = gather_rank_digests(*pg_, p.rank_tensors, p.rank_json);
  on_every_rank(*pg_, "save: committing " + p.final_dir.string(), [&] {
    if (pg_->rank() != 0) return;
    check_rank_files(p.tmp, all);
    all.insert(all.end(), p.global.begin(), p.global.end());
    const Json manifest =
        make_manifest(p.step, folder::next_sequence(dir_), pg_->size(), p.parts, all);
    core::write_file_atomic((p.tmp / "manifest.json").string(), manifest.dump(1));
    core::fsync_path(p.tmp.string());
    commit(p.tmp.string(), p.final_dir.string());
  });
  if (pg_->rank() == 0) prune();  // best effort: the save is committed, whatever happens here
  p.blocked_s += since(t);
  report(p);
}

void Manager::report(const Pending& p) {
  SaveReport r;
  r.dir = p.final_dir.string();
  r.step = p.step;
  r.async = p.async;
  r.blocked_s = p.blocked_s;
  r.write_s = p.write_s;
  if (sync_) {
    sync_->submit(r.dir);  // only committed folders leave the machine
  }
  r.sync = sync_counts();
  r.prune_failures = prune_failures_;
  CLIPPER_INFO("checkpoint " << r.dir << ": training blocked " << std::fixed << std::setprecision(2)
                             << r.blocked_s << " s, write " << r.write_s << " s"
                             << (r.async ? " (in the background)" : ""));
  if (options_.on_commit) options_.on_commit(r);
}

void Manager::commit(const std::string& tmp, const std::string& final_dir) {
  if (!fs::exists(final_dir)) {
    core::rename_durable(tmp, final_dir);
    return;
  }
  // The same step saved again (after a resume): one atomic swap, so the folder always holds a
  // complete checkpoint; the old one, now under the temporary name, goes with the next prune.
  core::exchange_durable(tmp, final_dir);
}

// Best effort, on rank 0 after a commit: leftovers of interrupted saves and prunes go, then every
// valid checkpoint but the keep_last committed last. What cannot be deleted is a warning, counted
// and tried again after the next commit; the newest committed checkpoint is never a candidate.
void Manager::prune() noexcept {
  const folder::RemoveFolder remove = [this](const fs::path& p) {
    if (options_.remove_folder)
      options_.remove_folder(p.string());
    else
      fs::remove_all(p);
  };
  std::vector<std::string> failed;
  try {
    if (auto e = folder::remove_leftovers(dir_, remove); !e.empty()) failed.push_back(e);
    std::vector<Found> valid;
    for (const auto& f : list_committed(dir_)) {
      try {
        validate(f.dir, /*check_crc=*/false);
        valid.push_back(f);
      } catch (const InputError&) {
        // An invalid folder is not a checkpoint: it neither counts nor gets deleted here.
      }
    }
    const auto keep = static_cast<std::size_t>(std::max<std::int64_t>(1, options_.keep_last));
    for (std::size_t i = 0; i + keep < valid.size(); ++i) {
      if (sync_ && sync_->uses(valid[i].dir)) continue;  // next time
      if (auto e = folder::prune_one(valid[i].dir, remove); !e.empty()) failed.push_back(e);
    }
  } catch (const std::exception& e) {
    failed.push_back(e.what());
  }
  for (const auto& e : failed) {
    ++prune_failures_;
    CLIPPER_WARN("checkpoint prune: " << e << " (" << prune_failures_
                                      << " failure(s) so far; tried again after the next save; "
                                         "training goes on)");
  }
}

namespace {

// The newest of `committed` that validates; each one skipped is warned about and its problem
// appended to `problems`.
std::optional<Found> newest_valid(const std::vector<Found>& committed, std::string* problems) {
  for (auto it = committed.rbegin(); it != committed.rend(); ++it) {
    try {
      validate(it->dir, /*check_crc=*/false);
      return *it;
    } catch (const InputError& e) {
      CLIPPER_WARN("skipping checkpoint " << it->dir << ": " << e.what());
      *problems += std::string("\n  ") + e.what();
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<Found> Manager::latest_valid() const {
  std::string problems;
  return newest_valid(list_committed(dir_), &problems);
}

// Only for a checkpoint of this run's folder (by identity: any spelling of its path), and only
// the ones committed after it. A name already taken in abandoned/ gets a suffix, never an error.
void Manager::set_aside_after(const Found& chosen) {
  if (!folder::is_inside(chosen.dir, dir_)) return;  // another run's checkpoint
  for (const auto& f : list_committed(dir_)) {
    if (f.sequence <= chosen.sequence || folder::same(f.dir, chosen.dir)) continue;
    const fs::path to = folder::aside_path(dir_, f.dir, f.sequence);
    fs::create_directories(to.parent_path());
    core::rename_durable(f.dir, to.string());
    CLIPPER_WARN("resuming from " << chosen.dir << " (step " << chosen.step << "): checkpoint "
                                  << f.dir << " was committed after it and is set aside as "
                                  << to.string());
  }
}

// "latest": the last committed valid checkpoint; nothing when none is committed; an error naming
// every problem when checkpoints are committed but none is valid (never a silent fresh start).
std::optional<Found> Manager::latest_for_resume() const {
  const auto committed = list_committed(dir_);
  std::string problems;
  if (auto found = newest_valid(committed, &problems)) return found;
  if (committed.empty()) return std::nullopt;
  throw InputError("--resume latest: none of the " + std::to_string(committed.size()) +
                   " committed checkpoint(s) in '" + dir_ + "' can be resumed:" + problems +
                   "\npoint --resume at a complete checkpoint folder, or start fresh without "
                   "--resume");
}

std::optional<std::string> Manager::resolve(const std::string& resume) {
  if (resume.empty()) return std::nullopt;
  dist::ScopedTimeout timeout(*pg_, options_.timeout_s);
  std::string chosen;
  on_every_rank(*pg_, "lookup (" + resume + ")", [&] {
    if (pg_->rank() != 0) return;
    std::optional<Found> found;
    if (resume == "latest") {
      found = latest_for_resume();
    } else {
      const Json m = validate(resume, /*check_crc=*/false);
      found = Found{resume, m["step"].get<std::int64_t>(), sequence_of(m)};
    }
    if (found) {
      set_aside_after(*found);
      chosen = found->dir;
    }
  });
  chosen = pg_->broadcast_string(chosen, 0);
  if (chosen.empty()) return std::nullopt;
  return chosen;
}

namespace {

// The rank files of a checkpoint, read and CRC-checked once each, on first use.
class RankFiles : public SavedRanks {
 public:
  RankFiles(std::string dir, const Json& files, int world_size)
      : dir_(std::move(dir)), files_(files), world_size_(world_size) {}
  void select(const std::string& part) { part_ = part; }
  int world_size() const override { return world_size_; }
  Json json(int rank) const override {
    const Json& j = rank_json(rank);
    return j.contains(part_) ? j[part_] : Json();
  }
  PartState read(int rank) const override {
    PartState s;
    for (const auto& [name, t] : rank_tensors(rank)) {
      std::string tensor;
      if (rank_tensor_part(name, &tensor) == part_) s.tensors.emplace_back(tensor, t);
    }
    s.json = json(rank);
    return s;
  }

 private:
  std::string checked(int rank, const char* ext) const {
    if (rank < 0 || rank >= world_size_)
      throw InputError("checkpoint '" + dir_ + "' has no rank " + std::to_string(rank) + " (" +
                       std::to_string(world_size_) + " ranks wrote it)");
    const std::string name = rank_name(rank, ext);
    const auto it = files_.find(name);
    if (it == files_.end()) return "";
    check_file(dir_, name, *it, /*check_crc=*/true);
    return (fs::path(dir_) / name).string();
  }
  const Json& rank_json(int rank) const {
    auto it = json_.find(rank);
    if (it != json_.end()) return it->second;
    const std::string p = checked(rank, "json");
    return json_[rank] = p.empty() ? Json::object() : read_json(p);
  }
  const TensorList& rank_tensors(int rank) const {
    auto it = tensors_.find(rank);
    if (it != tensors_.end()) return it->second;
    const std::string p = checked(rank, "safetensors");
    return tensors_[rank] = p.empty() ? TensorList{} : io::load_safetensors(p);
  }
  std::string dir_;
  const Json& files_;
  int world_size_;
  std::string part_;
  mutable std::map<int, Json> json_;
  mutable std::map<int, TensorList> tensors_;
};

}  // namespace

void Manager::load(const std::string& dir, const Parts& parts) const {
  dist::ScopedTimeout timeout(*pg_, options_.timeout_s);
  on_every_rank(*pg_, "load from " + dir, [&] {
    const Json m = validate(dir, /*check_crc=*/false);
    const Json& files = m["files"];
    // Each rank reads (and CRC-checks) the global files, and the rank files its per-rank parts
    // ask for (its own, unless a part re-splits state saved by another world size).
    auto read = [&](const std::string& name, auto load) {
      const auto it = files.find(name);
      if (it == files.end()) return;
      check_file(dir, name, *it, /*check_crc=*/true);
      load((fs::path(dir) / name).string());
    };
    RankFiles ranks(dir, files, m["world_size"].get<int>());
    for (const auto& part : parts) {
      if (part.scope == Scope::per_rank) {
        ranks.select(part.name);
        part.state->load_ranks(ranks, pg_->rank(), pg_->size(), dir);
        continue;
      }
      PartState state;
      const auto f = global_files(part.name);
      read(f.tensors, [&](const std::string& p) { state.tensors = io::load_safetensors(p); });
      read(f.json, [&](const std::string& p) { state.json = read_json(p); });
      part.state->load_state(state, dir);
    }
  });
}

}  // namespace clipper::checkpoint
