#pragma once
#include <string>

namespace clipper::core {

// clipper's own version ("0.1.0").
std::string version();

}  // namespace clipper::core
