#pragma once
// The rules of a run's checkpoints folder that are not about one checkpoint's files: which folder
// a checkpoint path is in (by identity, not by spelling), commit sequence numbers that never
// repeat, names in abandoned/ that never clash, and pruning that never fails a save.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

namespace clipper::checkpoint::folder {

// Whether the checkpoint `checkpoint` ("runs/x/checkpoints/step_2/", "./step_2", a symlink, ...)
// sits directly in the folder `checkpoints_dir`, decided by the file system's identity of the two
// folders (std::filesystem::equivalent), whatever the spelling.
bool is_inside(const std::string& checkpoint, const std::string& checkpoints_dir);
// Whether two paths name the same existing file or folder.
bool same(const std::string& a, const std::string& b);

// The next commit sequence number of `checkpoints_dir`: one more than any it has used, live
// checkpoints and set-aside ones (abandoned/<name>-seq<S>..., and the manifests in
// abandoned/before-*/) alike, so a number never repeats within a run folder.
std::int64_t next_sequence(const std::string& checkpoints_dir);

// Where the checkpoint `dir` (committed with `sequence`) goes when set aside:
// <checkpoints_dir>/abandoned/<name>-seq<S>, or <name>-seq<S>-<k> with the first k >= 2 whose
// name is free (a clash never stops a resume).
std::filesystem::path aside_path(const std::string& checkpoints_dir, const std::string& dir,
                                 std::int64_t sequence);

// Name prefixes of folders a save or a prune leaves behind when interrupted; the next save deletes
// them.
inline constexpr const char* kTmpPrefix = ".tmp-step_";
inline constexpr const char* kPrunePrefix = ".prune-";

// Deletes a folder (std::filesystem::remove_all unless a test puts a failing one in its place).
using RemoveFolder = std::function<void(const std::filesystem::path&)>;

// Deletes the checkpoint `dir`: first renamed to .prune-<name> (one atomic step after which it is
// no checkpoint at all, never a half-deleted one), then removed. Returns "" or what failed; a
// failure leaves either the checkpoint as it was or a .prune-<name> leftover.
std::string prune_one(const std::filesystem::path& dir, const RemoveFolder& remove);
// Deletes the .tmp-step_* and .prune-* leftovers in `checkpoints_dir`. Returns "" or what failed.
std::string remove_leftovers(const std::string& checkpoints_dir, const RemoveFolder& remove);

}  // namespace clipper::checkpoint::folder
