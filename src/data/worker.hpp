#pragma once
// Internal to the loader: the worker thread that turns its part of the epoch plan into decoded,
// tokenized samples in a fixed order, and the queue and buffer pool it shares with the collator.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "budget.hpp"
#include "clipper/data/loader.hpp"
#include "clipper/data/shard_list.hpp"
#include "counters.hpp"
#include "plan.hpp"

namespace clipper::data::detail {

struct Item {
  enum Kind { good, bad, event, fatal } kind = good;
  std::int64_t raw_index = -1;  // position in the (shuffled) raw sample stream of its piece
  int piece = 0;                // index of the piece it came from in the worker's epoch part
  bool repeated = false;        // read in a second pass over the worker's part
  int counter = -1;             // CounterKind for bad and event items
  std::string key;
  std::unique_ptr<std::uint8_t[]> image;  // output_bytes(transform) bytes, from the BufferPool
  PatchGrid grid;                         // NaFlex: the picture's patch grid
  std::int64_t seq_len = 0;               // token-budget batches: the patches it was cut for
  std::vector<std::int64_t> tokens;
  std::int64_t label = -1;
  // LoaderOptions::regions_key set: the sample's regions as its picture shows them.
  std::vector<Region> regions;
  std::string message;  // fatal: the error; bad: what was wrong, naming the shard and sample
};

// A bounded single-producer single-consumer queue; close() wakes everyone and makes both ends fail.
template <class T>
class BoundedQueue {
 public:
  explicit BoundedQueue(std::size_t capacity) : cap_(capacity) {}
  bool push(T&& v) {
    std::unique_lock<std::mutex> l(m_);
    not_full_.wait(l, [&] { return closed_ || q_.size() < cap_; });
    if (closed_) return false;
    q_.push_back(std::move(v));
    not_empty_.notify_one();
    return true;
  }
  bool pop(T& v) {
    std::unique_lock<std::mutex> l(m_);
    not_empty_.wait(l, [&] { return closed_ || !q_.empty(); });
    if (closed_) return false;
    v = std::move(q_.front());
    q_.pop_front();
    not_full_.notify_one();
    return true;
  }
  // True once an item waits or the queue is closed; false when `seconds` passed first.
  bool wait_for_item(double seconds) {
    std::unique_lock<std::mutex> l(m_);
    return not_empty_.wait_for(l, std::chrono::duration<double>(seconds),
                               [&] { return closed_ || !q_.empty(); });
  }
  void close() {
    std::lock_guard<std::mutex> l(m_);
    closed_ = true;
    not_full_.notify_all();
    not_empty_.notify_all();
  }

 private:
  std::size_t cap_;
  std::mutex m_;
  std::condition_variable not_full_, not_empty_;
  std::deque<T> q_;
  bool closed_ = false;
};

// Reuses the per-sample image buffers between workers and the collator: no allocation, page fault
// or zero-fill per sample.
class BufferPool {
 public:
  explicit BufferPool(std::size_t bytes) : bytes_(bytes) {}
  std::unique_ptr<std::uint8_t[]> get() {
    {
      std::lock_guard<std::mutex> l(m_);
      if (!free_.empty()) {
        auto b = std::move(free_.back());
        free_.pop_back();
        return b;
      }
    }
    return std::unique_ptr<std::uint8_t[]>(new std::uint8_t[bytes_]);
  }
  void put(std::unique_ptr<std::uint8_t[]> b) {
    if (!b) return;
    std::lock_guard<std::mutex> l(m_);
    if (free_.size() < 4096) free_.push_back(std::move(b));
  }

 private:
  std::size_t bytes_;
  std::mutex m_;
  std::vector<std::unique_ptr<std::uint8_t[]>> free_;
};

// A piece of a worker's part of the epoch with the plan of the stream it reads. An epoch of this
// layout's own plan is one piece: the worker's stream from its saved raw position, quota - done.
struct Stretch {
  WorkerPlan plan;
  Piece piece;
};

struct WorkerArgs {
  const ShardList* list = nullptr;
  const LoaderOptions* options = nullptr;
  std::vector<Stretch> stretches;  // read in order
  int first_piece = 0;             // Item::piece of stretches[0]
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer;
  BoundedQueue<Item>* out = nullptr;
  const std::atomic<bool>* stop = nullptr;
  BufferPool* pool = nullptr;
  // Token-budget batches (else null): the rank's batches, and the rank position of this worker's
  // next good sample (then every options->workers-th).
  std::shared_ptr<const RankSchedule> schedule;
  std::int64_t first_position = 0;
};

// The worker thread's body: never throws (a failure becomes a fatal item).
void run_worker(WorkerArgs args);

// Images the workers of this process decoded and transformed (ImageProcessor::process) so far:
// a test reads it to see what a skip costs.
std::int64_t images_processed();

// Tests stand in a failure where the loader starts a thread or allocates a batch: the hook runs
// at each such point with its name ("worker thread", "collator thread", "batch") and may throw.
// Unset (nullptr) in normal runs.
using FaultHook = void (*)(const char* where);
void set_fault_hook(FaultHook hook);
void fault_point(const char* where);

}  // namespace clipper::data::detail
