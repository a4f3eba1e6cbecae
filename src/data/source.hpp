#pragma once
// Internal to the loader: one worker's raw sample stream, as a state machine over its plan.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "clipper/data/loader.hpp"
#include "clipper/data/shard_list.hpp"
#include "clipper/data/tar_stream.hpp"
#include "plan.hpp"
#include "rng.hpp"

namespace clipper::data::detail {

// One raw sample and where it came from.
struct Pulled {
  RawSample sample;
  int shard = 0;
  bool repeated = false;  // read in a second pass over the worker's part
};
// What a Pulled holds in memory, for the shuffle buffer's byte bound.
inline std::size_t bytes_of(const Pulled& p) {
  return p.sample.bytes();
}

// The worker's segments again and again (split mode) or endless weighted shard draws (resampled).
// Shard problems are reported through `on_event(kind, url, why)` and the stream goes on.
class Source {
 public:
  enum Result { sample, pass_end, failed };
  using OnEvent = std::function<void(int, const std::string&, const std::string&)>;

  Source(const ShardList& list, const LoaderOptions& options, const WorkerPlan& plan,
         OnEvent on_event);
  ~Source();

  Result next(Pulled& out);
  // Why next() returned `failed`.
  const std::string& failure() const { return failure_; }
  // The most samples one full pass over the worker's part yielded so far (split mode).
  std::int64_t largest_pass() const { return largest_pass_; }

 private:
  // Opens the next segment; false at the end of a pass (split) or on a failure.
  bool open_next();
  bool draw_shard();
  bool next_segment();
  void fail(std::string why);

  const ShardList& list_;
  const LoaderOptions& o_;
  const WorkerPlan& plan_;
  OnEvent on_event_;
  Rng draw_rng_;
  std::vector<std::vector<int>> by_source_;
  std::unique_ptr<ShardReader> reader_;
  Segment seg_;
  std::size_t next_seg_ = 0;
  std::int64_t pos_ = 0, pass_ = 0, pass_count_ = 0, empty_draws_ = 0, largest_pass_ = 0;
  bool failed_ = false;
  std::string failure_;
};

}  // namespace clipper::data::detail
