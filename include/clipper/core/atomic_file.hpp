#pragma once
// Atomic file writes: a temporary name in the same folder, fsync, rename, fsync of the folder.
// A reader sees either the old file or the complete new one, never a torn one.
#include <string>
#include <string_view>

namespace clipper::core {

void write_file_atomic(const std::string& path, std::string_view bytes);
// Renames `from` to `to` and fsyncs the folder of `to` (works for folders too).
void rename_durable(const std::string& from, const std::string& to);
void fsync_path(const std::string& path);
std::string read_file(const std::string& path);

}  // namespace clipper::core
