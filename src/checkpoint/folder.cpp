#include "folder.hpp"

#include <algorithm>
#include <system_error>

#include "clipper/checkpoint/checkpoint.hpp"

namespace fs = std::filesystem;

namespace clipper::checkpoint::folder {
namespace {

// The folder a checkpoint path names, absolute and without "." or a trailing "/".
fs::path normal_folder(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::absolute(path, ec).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();  // "step_2/" -> "step_2"
  return p;
}

// S of "<name>-seq<S>" or "<name>-seq<S>-<k>", else 0.
std::int64_t sequence_in_name(const std::string& name) {
  const auto at = name.rfind("-seq");
  if (at == std::string::npos) return 0;
  std::int64_t s = 0;
  std::size_t i = at + 4, digits = 0;
  for (; i < name.size() && name[i] >= '0' && name[i] <= '9' && digits < 18; ++i, ++digits)
    s = s * 10 + (name[i] - '0');
  return digits > 0 && (i == name.size() || name[i] == '-') ? s : 0;
}

std::int64_t highest_in(const std::vector<Found>& found) {
  std::int64_t top = 0;
  for (const auto& f : found) top = std::max(top, f.sequence);
  return top;
}

bool starts_with(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}

}  // namespace

bool same(const std::string& a, const std::string& b) {
  std::error_code ec;
  const bool eq = fs::equivalent(a, b, ec);
  return !ec && eq;
}

bool is_inside(const std::string& checkpoint, const std::string& checkpoints_dir) {
  return same(normal_folder(checkpoint).parent_path().string(), checkpoints_dir);
}

std::int64_t next_sequence(const std::string& checkpoints_dir) {
  std::int64_t top = highest_in(list_committed(checkpoints_dir));
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(checkpoints_dir) / "abandoned", ec)) {
    const std::string name = e.path().filename().string();
    top = std::max(top, sequence_in_name(name));
    if (starts_with(name, "before-"))  // checkpoint.overwrite moved a whole branch here
      top = std::max(top, highest_in(list_committed(e.path().string())));
  }
  return top + 1;
}

fs::path aside_path(const std::string& checkpoints_dir, const std::string& dir,
                    std::int64_t sequence) {
  const std::string base =
      normal_folder(dir).filename().string() + "-seq" + std::to_string(sequence);
  const fs::path abandoned = fs::path(checkpoints_dir) / "abandoned";
  fs::path to = abandoned / base;
  std::error_code ec;
  for (int k = 2; fs::exists(fs::symlink_status(to, ec)); ++k)
    to = abandoned / (base + "-" + std::to_string(k));
  return to;
}

std::string prune_one(const fs::path& dir, const RemoveFolder& remove) {
  const fs::path doomed = dir.parent_path() / (kPrunePrefix + dir.filename().string());
  std::error_code ec;
  fs::rename(dir, doomed, ec);
  if (ec) return "cannot rename " + dir.string() + " to " + doomed.string() + ": " + ec.message();
  try {
    remove(doomed);
  } catch (const std::exception& e) {
    return "cannot delete " + doomed.string() + ": " + e.what();
  }
  return "";
}

std::string remove_leftovers(const std::string& checkpoints_dir, const RemoveFolder& remove) {
  std::string failed;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(checkpoints_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!starts_with(name, kTmpPrefix) && !starts_with(name, kPrunePrefix)) continue;
    try {
      remove(e.path());
    } catch (const std::exception& err) {
      failed += (failed.empty() ? "cannot delete " : "; ") + e.path().string() + ": " + err.what();
    }
  }
  return failed;
}

}  // namespace clipper::checkpoint::folder
