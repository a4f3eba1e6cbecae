#pragma once
// Where clipper's data files live (share/clipper/: configs/models, the BPE vocabulary), found
// from the running binaries, never from the source tree: <dir of the executable>/../share/clipper
// and <dir of the clipper libraries>/../share/clipper. The build tree has the same layout
// (build/bin, build/lib, build/share/clipper) as an install prefix.
#include <string>
#include <vector>

namespace clipper::core {

// The candidates in that order, without duplicates (each may not exist).
std::vector<std::string> share_dirs();

}  // namespace clipper::core
