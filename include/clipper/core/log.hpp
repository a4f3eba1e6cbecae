#pragma once
// Rank-aware logging. Rank 0 writes to the console (and its file); other ranks write to their own
// files and send only errors to the console. spdlog stays inside src/core/log.cpp: this header
// needs no fmt, so it mixes safely with LibTorch's bundled fmt (see cmake/clipper_deps.cmake).
//
//   CLIPPER_INFO("step " << step << " loss " << loss);
#include <chrono>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>

namespace clipper::core::log {

enum class Level { trace = 0, debug, info, warn, error, off };

struct Options {
  int rank = 0;
  Level console_level = Level::info;
  Level file_level = Level::debug;
  std::string file_path;  // empty: no log file
};

// Replaces the sinks; safe to call again (e.g. once the run folder and the rank are known).
void configure(const Options& options);
// "trace", "debug", "info", "warn", "error" or "off"; anything else throws InputError.
Level parse_level(std::string_view name);
bool enabled(Level level);
void write(Level level, std::string_view message);
void flush();

// Lets a message through at most once per `interval` for each key; counts what it held back.
class RateLimiter {
 public:
  explicit RateLimiter(std::chrono::milliseconds interval) : interval_(interval) {}
  // True when a message for `key` may be written now; `suppressed` gets the number held back since.
  bool allow(const std::string& key, long long* suppressed = nullptr);

 private:
  struct Slot {
    std::chrono::steady_clock::time_point last{};
    long long held = 0;
    bool used = false;
  };
  std::chrono::milliseconds interval_;
  std::mutex mutex_;
  std::unordered_map<std::string, Slot> slots_;
};

}  // namespace clipper::core::log

#define CLIPPER_LOG(level, expr)                                 \
  do {                                                           \
    if (::clipper::core::log::enabled(level)) {                  \
      std::ostringstream clipper_log_os_;                        \
      clipper_log_os_ << expr;                                   \
      ::clipper::core::log::write(level, clipper_log_os_.str()); \
    }                                                            \
  } while (0)
#define CLIPPER_TRACE(expr) CLIPPER_LOG(::clipper::core::log::Level::trace, expr)
#define CLIPPER_DEBUG(expr) CLIPPER_LOG(::clipper::core::log::Level::debug, expr)
#define CLIPPER_INFO(expr) CLIPPER_LOG(::clipper::core::log::Level::info, expr)
#define CLIPPER_WARN(expr) CLIPPER_LOG(::clipper::core::log::Level::warn, expr)
#define CLIPPER_ERROR(expr) CLIPPER_LOG(::clipper::core::log::Level::error, expr)
