// clipper bench loss [--kind clip|siglip] [--chunked] [--full] [--exchange gather|neighbour]
//   [--batch B] [--dim D]: peak loss memory of one rank; run it under
//   `clipper launch --nproc-per-node W -- bench loss ...` for W ranks on Gloo.
#include "verbs.hpp"

#include <iostream>
#include <memory>

#include "clipper/bench/bench_loss.hpp"

namespace clipper::cli {
namespace {

void setup_bench_loss(CLI::App& app, Action* action) {
  auto o = std::make_shared<bench::LossBenchOptions>();
  auto full = std::make_shared<bool>(false);
  auto* v = bench_group(app)->add_subcommand(
      "loss", "Peak memory of the contrastive loss (forward + backward) per rank on the CPU");
  add_choice_option(v, "--kind", o->loss.kind, "clip or siglip");
  v->add_flag("--chunked", o->loss.chunked, "loss.chunked: one peer block at a time");
  v->add_flag("--full", *full, "CLIP: loss.local_loss=false (the whole W*B x W*B matrix)");
  add_choice_option(v, "--exchange", o->loss.siglip_exchange, "SigLIP: gather or neighbour");
  v->add_option("--batch", o->batch, "batch per rank")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  v->add_option("--dim", o->dim, "embedding width")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  v->add_option("--steps", o->steps, "forward + backward passes")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  v->callback([o, full, action] {
    *action = [o, full] {
      o->loss.local_loss = !*full;
      const auto r = bench::bench_loss(*o);
      if (r.rank == 0) std::cout << r.to_text() << std::flush;
      return 0;
    };
  });
}

}  // namespace

CLIPPER_REGISTER_VERB(bench_loss, setup_bench_loss);

}  // namespace clipper::cli
