#pragma once
// Atomic file writes: a temporary name in the same folder, fsync, rename, fsync of the folder.
// A reader sees either the old file or the complete new one, never a torn one.
#include <string>
#include <string_view>

#include "clipper/core/digest.hpp"

namespace clipper::core {

// Returns the size and CRC-32 of what it wrote.
FileDigest write_file_atomic(const std::string& path, std::string_view bytes);
// Renames `from` to `to` and fsyncs the folder of `to` (works for folders too).
void rename_durable(const std::string& from, const std::string& to);
void fsync_path(const std::string& path);
// Swaps two existing paths in one atomic step (Linux renameat2 RENAME_EXCHANGE), then fsyncs the
// folder: a reader sees either the old or the new `b`, never neither.
void exchange_durable(const std::string& a, const std::string& b);
// Creates `path` and its missing parents with mode 0750 (less if the umask says so): run folders
// and checkpoints may hold credentials in their config and are not for other users to read.
// Folders that exist keep their mode.
void make_private_dirs(const std::string& path);
std::string read_file(const std::string& path);

}  // namespace clipper::core
