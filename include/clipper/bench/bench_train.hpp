#pragma once
// `clipper bench train`: the whole training step (both towers, loss, backward, gradient
// all-reduce when world > 1, optimizer) on synthetic device-resident batches.
#include <cstdint>
#include <string>

#include "clipper/config/config.hpp"

namespace clipper::bench {

struct BenchOptions {
  std::string model = "ViT-B-32";
  std::int64_t batch = 256;  // per device
  config::Device device = config::Device::automatic;
  config::Precision precision = config::Precision::automatic;
  std::int64_t steps = 20;
  std::int64_t warmup = 3;
  std::int64_t breakdown_steps = 3;  // extra steps timed phase by phase (synchronizing)
  double peak_tflops = 0;            // 0: 790 on CUDA, none on CPU
  std::int64_t threads = 0;          // CPU intra-op threads; 0: LibTorch's default
  std::int64_t sync_every = 0;       // host read-back every N steps; 0: 10 on CUDA, 1 on CPU
  bool channels_last = true;         // CUDA: ResNet tower NHWC (train.channels_last)
  bool fused_adamw = true;           // optim.fused
  std::string sdpa = "auto";         // auto: LibTorch picks (flash, ...); math: the unfused path
  bool cuda_graph = false;           // also time the step captured in a CUDA graph and replayed
  bool grad_checkpointing = false;
  // NaFlex models (preprocess_cfg.max_seq_len > 0): the batches are pictures of mixed aspect
  // ratios as patches under the token budget (a fixed cycle of ratios), run packed or padded.
  bool naflex_packing = true;
  // NaFlex: pictures also of mixed sizes: picture i under a budget of max_seq_len / 2^(i % 3)
  // (as pictures smaller than the budget would be without upscaling), not all filling it.
  bool naflex_mixed_sizes = false;
  std::int64_t zero = 0;                                    // dist.zero
  config::Prefetch prefetch = config::Prefetch::automatic;  // dist.prefetch (zero 3)
  bool gather_bf16 = false;                                 // dist.gather_bf16 (zero 3)
  bool chunked_loss = false;                                // loss.chunked
  std::int64_t lora_rank = 0;  // lora.rank (0: full fine-tune); adapters on attn + mlp, both towers
  double lora_alpha = 16.0;    // lora.alpha
};

struct BenchResult {
  std::string model, device, precision;
  std::int64_t batch = 0, world_size = 1, steps = 0, sync_every = 1;
  double samples_per_s = 0;                                                 // global
  double step_ms = 0;                                                       // mean, throughput run
  double forward_ms = 0, backward_ms = 0, reduce_ms = 0, optimizer_ms = 0;  // breakdown run
  double peak_memory_gib = 0;         // CUDA allocator peak, or the process's peak RSS on CPU
  double payload_bytes_per_step = 0;  // handed to collectives per rank and step (timed steps)
  std::int64_t zero = 0;              // dist.zero
  double gather_wait_ms = 0;          // zero 3: waiting for parameter gathers (breakdown run)
  // Per rank, as the step counts them (its last step): trainable parameters held at most and
  // between steps, gradients held at most (full, flat buckets, shards), AdamW state.
  double parameter_peak_bytes = 0, parameter_resident_bytes = 0, gradient_peak_bytes = 0;
  double optimizer_bytes = 0;
  double mfu = -1;                  // -1: no peak known
  double gflops_per_sample = 0;     // training (3 x forward)
  double graph_samples_per_s = -1;  // --cuda-graph: the captured step replayed (-1: not run)
  std::string graph_error;          // --cuda-graph: why capture failed
  std::int64_t params = 0, trainable_params = 0;  // values; trainable: what AdamW updates
  // NaFlex: the share of sequence slots that are padding as the batch comes (each picture padded
  // to the budget) and as the blocks ran it (packed rows; equal when not packed). -1: not NaFlex.
  double padded_share = -1, run_padded_share = -1;
  std::string to_json() const;
  std::string to_text() const;
};

BenchResult bench_train(const BenchOptions& options);

}  // namespace clipper::bench
