#pragma once
// Declaration shim, see ../README.md.
#include <chrono>

namespace gloo {
class Context {
 public:
  // Declared only so that ProcessGroupGloo.hpp's inline setTimeout parses; never called from
  // clipper (the virtual c10d::Backend::setTimeout reaches the wheel's own code).
  void setTimeout(std::chrono::milliseconds timeout);
};
}  // namespace gloo
