#include "clipper/core/log.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <filesystem>

#include "clipper/core/error.hpp"
#include "clipper/core/redact.hpp"

// This file must see Debian's fmt (the one spdlog was built against), never the copy bundled
// inside LibTorch's include folder: clipper_core does not link Torch, and this check makes a
// wrong include order fail at compile time instead of at link or run time.
#if defined(SPDLOG_FMT_EXTERNAL) && defined(FMT_VERSION) && (FMT_VERSION / 10000 != 9)
#error "clipper_core must be built against the fmt that spdlog uses (Debian's fmt 9)"
#endif

namespace clipper::core::log {
namespace {

spdlog::level::level_enum to_spd(Level l) {
  switch (l) {
    case Level::trace:
      return spdlog::level::trace;
    case Level::debug:
      return spdlog::level::debug;
    case Level::info:
      return spdlog::level::info;
    case Level::warn:
      return spdlog::level::warn;
    case Level::error:
      return spdlog::level::err;
    case Level::off:
      return spdlog::level::off;
  }
  return spdlog::level::info;
}

std::mutex g_mutex;
std::shared_ptr<spdlog::logger> g_logger;
std::atomic<int> g_min_level{static_cast<int>(Level::info)};

std::shared_ptr<spdlog::logger> make_logger(const Options& o) {
  std::vector<spdlog::sink_ptr> sinks;
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  // Rank 0 talks; the others only report errors on the console.
  const Level console_level =
      o.rank == 0 ? o.console_level : std::max(o.console_level, Level::error);
  console->set_level(to_spd(console_level));
  console->set_pattern(o.rank == 0 ? "%H:%M:%S %^%l%$ %v"
                                   : "%H:%M:%S %^%l%$ [rank " + std::to_string(o.rank) + "] %v");
  sinks.push_back(console);
  Level min_level = console_level;
  if (!o.file_path.empty()) {
    std::filesystem::path p(o.file_path);
    if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
    auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(o.file_path, false);
    file->set_level(to_spd(o.file_level));
    file->set_pattern("%Y-%m-%d %H:%M:%S.%e %l [rank " + std::to_string(o.rank) + "] %v");
    sinks.push_back(file);
    min_level = std::min(min_level, o.file_level);
  }
  auto logger = std::make_shared<spdlog::logger>("clipper", sinks.begin(), sinks.end());
  logger->set_level(spdlog::level::trace);
  logger->flush_on(spdlog::level::warn);
  g_min_level = static_cast<int>(min_level);
  return logger;
}

spdlog::logger& logger() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_logger) g_logger = make_logger(Options{});
  return *g_logger;
}

}  // namespace

void configure(const Options& options) {
  auto fresh = make_logger(options);
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_logger) g_logger->flush();
  g_logger = std::move(fresh);
}

Level parse_level(std::string_view name) {
  if (name == "trace") return Level::trace;
  if (name == "debug") return Level::debug;
  if (name == "info") return Level::info;
  if (name == "warn" || name == "warning") return Level::warn;
  if (name == "error") return Level::error;
  if (name == "off") return Level::off;
  throw InputError("unknown log level '" + std::string(name) +
                   "': expected one of trace, debug, info, warn, error, off");
}

bool enabled(Level level) {
  return static_cast<int>(level) >= g_min_level.load(std::memory_order_relaxed);
}

void write(Level level, std::string_view message) {
  // Shard URLs and pipe: commands in messages may carry credentials.
  const std::string text = redact_secrets(message);
  logger().log(to_spd(level), spdlog::string_view_t(text.data(), text.size()));
}

void flush() {
  logger().flush();
}

bool RateLimiter::allow(const std::string& key, long long* suppressed) {
  std::lock_guard<std::mutex> lock(mutex_);
  Slot& s = slots_[key];
  const auto now = std::chrono::steady_clock::now();
  if (s.used && now - s.last < interval_) {
    ++s.held;
    return false;
  }
  if (suppressed) *suppressed = s.held;
  s.held = 0;
  s.last = now;
  s.used = true;
  return true;
}

}  // namespace clipper::core::log
