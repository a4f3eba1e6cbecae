#pragma once
// Errors with context. Every failure a user can cause is reported as a clipper::core::Error whose
// message names the file, key, shard or sample and what was expected.
#include <stdexcept>
#include <string>

namespace clipper::core {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A bad user input (config, command line, data): reported without a stack, exit code 1.
class InputError : public Error {
 public:
  using Error::Error;
};

// Throws InputError with `what` when `ok` is false.
inline void require(bool ok, const std::string& what) {
  if (!ok) throw InputError(what);
}

}  // namespace clipper::core
