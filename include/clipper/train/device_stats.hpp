#pragma once
// Training statistics kept on the device between host reads, so a step needs no host
// synchronization: loss sums, step and skip counts, the run of bad steps, the last gradient norm
// and logit scale. One read_back() copies them to the host and starts a new window.
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace clipper::train {

// What one read reports: the window of steps since the previous read.
struct StatsWindow {
  bool read = false;         // the fields below were read back
  bool skipped = false;      // the last step had a non-finite loss or gradient: nothing changed
  double loss = 0.0;         // mean over ranks and over the window's good steps (NaN: none)
  double grad_norm = 0.0;    // global norm before clipping, last step
  double logit_scale = 0.0;  // exp(logit_scale) after the last step
  std::int64_t window_steps = 0, window_skipped = 0;
  double window_loss_sum = 0.0;     // sum of the good steps' losses
  double last_loss = 0.0;           // loss of the last good step (so far)
  std::int64_t nan_in_row = 0;      // bad steps in a row at the window's end (across windows)
  std::int64_t max_nan_in_row = 0;  // longest such run that ended in the window (or goes on)
};

class DeviceStats {
 public:
  explicit DeviceStats(at::Device device);
  // One step: its mean loss, whether it was bad, its gradient norm and the logit scale after it
  // (all 0-d device tensors). No host synchronization.
  void update(const at::Tensor& loss, const at::Tensor& bad, const at::Tensor& grad_norm,
              const at::Tensor& logit_scale);
  // The one host read: the window since the last read; then a new window (the run of bad steps
  // and the last good loss carry over).
  StatsWindow read_back();
  std::int64_t nan_in_row() const;  // synchronizes
  void set_nan_in_row(std::int64_t n);

 private:
  at::Tensor values_;  // float64 [Field::count] on the device
};

}  // namespace clipper::train
