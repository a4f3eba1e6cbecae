#pragma once
// A progress line at a fixed interval for long jobs (shard writing, evaluation, dataset stats):
//
//   core::Progress p("shards", total, "samples");
//   for (...) p.update(done, "3 shards done, 2 bad");
//   -> "shards: 1,200 / 10,000 samples (12.0 %), 850 samples/s, 3 shards done, 2 bad, ETA 10s"
//
// Nothing is printed before `every_s` seconds have passed, so a short job stays quiet. The default
// interval is 10 s, or CLIPPER_PROGRESS_EVERY (seconds) from the environment.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "clipper/core/log.hpp"

namespace clipper::core {

// "1h02m", "3m05s", "42s".
inline std::string format_duration(double seconds) {
  if (!(seconds >= 0)) return "?";
  const auto s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, (s / 60) % 60);
  else if (s >= 60)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%llds", s);
  return buf;
}

// 1234567 -> "1,234,567".
inline std::string group_digits(std::int64_t v) {
  std::string s = std::to_string(v < 0 ? -v : v);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3)
    s.insert(static_cast<std::size_t>(i), ",");
  return v < 0 ? "-" + s : s;
}

// 10 s, or CLIPPER_PROGRESS_EVERY when it holds a number.
inline double default_progress_interval() {
  if (const char* e = std::getenv("CLIPPER_PROGRESS_EVERY")) {
    char* end = nullptr;
    const double v = std::strtod(e, &end);
    if (end != e) return v;
  }
  return 10.0;
}

class Progress {
 public:
  using Clock = std::chrono::steady_clock;
  // `total` < 0: unknown (no percentage, no ETA). `every_s` <= 0: never prints.
  Progress(std::string what, std::int64_t total, std::string unit,
           double every_s = default_progress_interval())
      : what_(std::move(what)),
        unit_(std::move(unit)),
        total_(total),
        every_s_(every_s),
        start_(Clock::now()),
        last_(start_) {}

  // True when the next update() would print (lets a caller skip building `extra`).
  bool due() const { return every_s_ > 0 && seconds_since(last_) >= every_s_; }

  // Prints a line when due; `done` counts all the work, including set_skipped()'s.
  void update(std::int64_t done, const std::string& extra = {}) {
    if (!due()) return;
    last_ = Clock::now();
    ++lines_;
    CLIPPER_INFO(line(done, extra));
  }

  std::string line(std::int64_t done, const std::string& extra = {}) const {
    const double t = seconds_since(start_);
    const double rate = t > 0 ? static_cast<double>(done - skipped_) / t : 0.0;
    std::string s = what_ + ": " + group_digits(done);
    if (total_ >= 0) {
      char pct[32];
      std::snprintf(
          pct, sizeof pct, " (%.1f %%)",
          total_ > 0 ? 100.0 * static_cast<double>(done) / static_cast<double>(total_) : 100.0);
      s += " / " + group_digits(total_) + " " + unit_ + pct;
    } else {
      s += " " + unit_;
    }
    char r[48];
    std::snprintf(r, sizeof r, ", %.0f %s/s", rate, unit_.c_str());
    s += r;
    if (!extra.empty()) s += ", " + extra;
    if (total_ >= 0 && rate > 0)
      s += ", ETA " + format_duration(static_cast<double>(total_ - done) / rate);
    return s;
  }

  // Work already done before this job started (a resumed run): not counted in the rate.
  void set_skipped(std::int64_t n) { skipped_ = n; }
  double elapsed_s() const { return seconds_since(start_); }
  int lines() const { return lines_; }

 private:
  static double seconds_since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  }

  std::string what_, unit_;
  std::int64_t total_;
  double every_s_;
  Clock::time_point start_, last_;
  std::int64_t skipped_ = 0;
  int lines_ = 0;
};

}  // namespace clipper::core
