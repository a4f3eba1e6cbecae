#pragma once
// Evaluation in the run's precision. With bf16 the towers' forward passes, and only they, run
// under bf16 autocast, as the run trains (CLIP_benchmark's --amp); features leave them as fp32,
// and the metrics, the class embeddings' averaging and linear probes stay in fp32.
#include <c10/core/DeviceType.h>

#include "clipper/train/precision.hpp"

namespace clipper::eval {

// For this thread and this scope: whether evaluation's tower calls run under bf16 autocast on
// `device`. The evaluation functions below it read it (they run the towers on the calling thread).
class EvalPrecision {
 public:
  EvalPrecision(bool bf16, c10::DeviceType device);
  ~EvalPrecision();
  EvalPrecision(const EvalPrecision&) = delete;
  EvalPrecision& operator=(const EvalPrecision&) = delete;

 private:
  bool was_bf16_;
  c10::DeviceType was_device_;
};

// True inside an EvalPrecision that asked for bf16 (on this thread).
bool eval_in_bf16();

// The scope of one tower call: bf16 autocast where the EvalPrecision around it asked for it.
class TowerAutocast {
 public:
  TowerAutocast();

 private:
  train::AutocastGuard guard_;
};

}  // namespace clipper::eval
