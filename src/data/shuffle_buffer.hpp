#pragma once
// Internal to the loader: WebDataset's sample shuffle buffer, seeded.
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "rng.hpp"

namespace clipper::data::detail {

// fill() pulls from the source as WebDataset's shuffle does before each output: up to `initial`
// items first, then up to two items while below `size`. A pass of the source (pull() returns
// pass_end) drains fully before the next pass starts, so a repeat never overtakes an item not yet
// delivered. With size <= 1 the order is kept.
template <class T>
class ShuffleBuffer {
 public:
  enum Pull { item, pass_end, failure };

  // `max_bytes` (0: none) bounds the bytes held, by bytes_of(T): a buffer of a few huge samples
  // stops filling early (it always holds at least one item).
  ShuffleBuffer(std::size_t size, std::size_t initial, std::uint64_t seed,
                std::size_t max_bytes = 0)
      : size_(std::max<std::size_t>(size, 1)),
        initial_(std::min(size_, std::max<std::size_t>(initial, 1))),
        max_bytes_(max_bytes),
        rng_(seed) {}

  // `pull(T&)` returns item (filled), pass_end or failure.
  template <class PullFn>
  void fill(PullFn&& pull) {
    if (draining_ && buf_.empty() && !failed_) draining_ = false;  // the next pass
    while (!draining_ && buf_.size() < initial_ && has_room()) pull_one(pull);
    if (draining_) return;
    if (buf_.empty() || has_room()) pull_one(pull);
    if (!draining_ && buf_.size() < size_ && has_room()) pull_one(pull);
  }

  // One item out; false when the buffer is empty.
  bool next(T* out) {
    if (buf_.empty()) return false;
    if (size_ > 1) {
      const std::size_t i = rng_.below(buf_.size());
      std::swap(buf_[i], buf_.back());
      *out = std::move(buf_.back());
      buf_.pop_back();
    } else {
      *out = std::move(buf_.front());
      buf_.erase(buf_.begin());
    }
    if (max_bytes_) bytes_ -= std::min(bytes_, bytes_of(*out));
    return true;
  }

  // The source failed; once the buffer is empty nothing more comes.
  bool failed() const { return failed_; }
  std::size_t size() const { return buf_.size(); }

 private:
  template <class PullFn>
  void pull_one(PullFn& pull) {
    T v;
    const Pull r = pull(v);
    if (r == item) {
      if (max_bytes_) bytes_ += bytes_of(v);
      buf_.push_back(std::move(v));
    } else
      draining_ = true, failed_ = failed_ || r == failure;
  }
  bool has_room() const { return !max_bytes_ || bytes_ < max_bytes_; }

  std::size_t size_, initial_, max_bytes_, bytes_ = 0;
  Rng rng_;
  std::vector<T> buf_;
  bool draining_ = false, failed_ = false;
};

}  // namespace clipper::data::detail
