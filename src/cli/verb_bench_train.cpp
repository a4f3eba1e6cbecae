// clipper bench train --model M --batch B [--device cpu|cuda] [--precision bf16|fp32] [--steps N]
#include "verbs.hpp"

#include <fstream>
#include <iostream>
#include <memory>

#include "clipper/bench/bench_train.hpp"

namespace clipper::cli {
namespace {

void setup_bench_train(CLI::App& app, Action* action) {
  auto o = std::make_shared<bench::BenchOptions>();
  auto json_out = std::make_shared<std::string>();
  auto* v = bench_group(app)->add_subcommand("train",
                                             "Whole training step on synthetic device-resident "
                                             "batches: samples/s, breakdown, memory, MFU");
  v->add_option("--model", o->model, "architecture name (configs/models)")->capture_default_str();
  v->add_option("--batch", o->batch, "batch per device")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  add_choice_option(v, "--device", o->device, "auto, cpu or cuda");
  add_choice_option(v, "--precision", o->precision, "auto (bf16 on CUDA), bf16 or fp32");
  v->add_option("--steps", o->steps, "timed steps")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  v->add_option("--warmup", o->warmup, "untimed steps first")->capture_default_str();
  v->add_option("--breakdown-steps", o->breakdown_steps,
                "extra steps timed phase by phase (the first one not counted); 0: none")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  v->add_option("--threads", o->threads, "CPU intra-op threads (0: LibTorch's default)")
      ->capture_default_str();
  v->add_option("--sync-every", o->sync_every,
                "read the loss / NaN check back every N steps (0: 10 on CUDA, 1 on CPU)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  v->add_flag("!--no-channels-last", o->channels_last,
              "CUDA: leave the ResNet tower's weights NCHW (default: channels-last)");
  v->add_flag("!--no-fused-adamw", o->fused_adamw,
              "PyTorch's multi-tensor AdamW instead of the fused kernel (optim.fused=false)");
  v->add_option("--sdpa", o->sdpa, "attention kernels: auto (flash / fused) or math")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "math"}));
  v->add_flag("--cuda-graph", o->cuda_graph,
              "also capture the whole step in a CUDA graph and time its replays");
  v->add_option("--peak-tflops", o->peak_tflops, "device peak for MFU (0: 790 on CUDA)")
      ->capture_default_str();
  v->add_flag("--grad-checkpointing", o->grad_checkpointing, "recompute blocks in backward");
  v->add_flag("!--no-naflex-packing", o->naflex_packing,
              "NaFlex models: run the padded batches padded, not packed several pictures to a "
              "row (vision_cfg.naflex_packing=false)");
  v->add_flag("--naflex-mixed-sizes", o->naflex_mixed_sizes,
              "NaFlex models: pictures under 1, 1/2 and 1/4 of the token budget in turn, "
              "not all filling it");
  v->add_option("--zero", o->zero,
                "dist.zero: 0, 1 (AdamW state sharded), 2 (+ gradients) or 3 (+ parameters)")
      ->capture_default_str()
      ->check(CLI::Range(0, 3));
  add_choice_option(v, "--prefetch", o->prefetch,
                    "dist.prefetch with --zero 3: auto (on for CUDA), on or off");
  v->add_flag("--gather-bf16", o->gather_bf16, "dist.gather_bf16 with --zero 3");
  v->add_flag("--chunked-loss", o->chunked_loss, "loss.chunked: one peer block at a time (ring)");
  v->add_option("--lora-rank", o->lora_rank,
                "lora.rank: adapters of this rank on every attention and MLP layer, base weights "
                "frozen (0: full fine-tune)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  v->add_option("--lora-alpha", o->lora_alpha, "lora.alpha")->capture_default_str();
  v->add_option("--json", *json_out, "also append the result as one JSON line to this file");
  v->callback([o, json_out, action] {
    *action = [o, json_out] {
      const auto r = bench::bench_train(*o);
      std::cout << r.to_text() << std::flush;
      if (!json_out->empty()) std::ofstream(*json_out, std::ios::app) << r.to_json() << "\n";
      return 0;
    };
  });
}

}  // namespace

CLIPPER_REGISTER_VERB(bench_train, setup_bench_train);

}  // namespace clipper::cli
