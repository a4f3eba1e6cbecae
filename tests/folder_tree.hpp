#pragma once
// The folder tree a test asserts: every folder under a root ("abandoned/",
// "abandoned/step_00000004-seq2/") and every file of a folder that holds no manifest.json (a
// committed checkpoint's own files are left out; an uncommitted .tmp-step_* folder's are listed),
// sorted. Empty when the root does not exist.
#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

namespace clipper::test {

using Tree = std::vector<std::string>;

inline Tree folder_tree(const std::filesystem::path& root) {
  namespace fs = std::filesystem;
  Tree out;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    const std::string rel = fs::relative(e.path(), root).string();
    if (e.is_directory())
      out.push_back(rel + "/");
    else if (!fs::exists(e.path().parent_path() / "manifest.json"))
      out.push_back(rel);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace clipper::test
