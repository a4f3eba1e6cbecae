// clipper plan --model M --world W --batch B --zero Z [--precision bf16|fp32]
// [--grad-checkpointing]
#include <iostream>
#include <memory>

#include "clipper/bench/plan.hpp"
#include "clipper/model/model_spec.hpp"
#include "verbs.hpp"

namespace clipper::cli {
namespace {

void setup_plan_verb(CLI::App& app, Action* action) {
  struct Args {
    std::string model = "ViT-B-16";
    std::string precision = "bf16";
    bool json = false;
    bench::PlanOptions o;
  };
  auto a = std::make_shared<Args>();
  auto* v = app.add_subcommand(
      "plan",
      "Per-rank memory and per-step communication of a run, on paper (docs/distributed.md)");
  v->add_option("--model", a->model, "architecture name (configs/models)")->capture_default_str();
  v->add_option("--world", a->o.world, "ranks")->capture_default_str()->check(CLI::PositiveNumber);
  v->add_option("--batch", a->o.batch, "batch per rank")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  v->add_option("--zero", a->o.zero,
                "0, 1 (optimizer state sharded), 2 (+ gradients) or 3 (+ parameters)")
      ->capture_default_str()
      ->check(CLI::Range(0, 3));
  v->add_flag("--prefetch", a->o.prefetch, "zero 3: dist.prefetch on (one more unit gathered)");
  v->add_flag("--gather-bf16", a->o.gather_bf16, "zero 3: dist.gather_bf16");
  v->add_option("--precision", a->precision, "bf16 (autocast) or fp32")
      ->capture_default_str()
      ->check(CLI::IsMember({"bf16", "fp32"}));
  v->add_flag("--grad-checkpointing", a->o.grad_checkpointing, "recompute blocks in backward");
  v->add_flag("!--no-local-loss", a->o.local_loss, "each rank computes the whole logits matrix");
  v->add_flag("--chunked-loss", a->o.chunked, "loss.chunked: one peer block at a time (ring)");
  v->add_option("--ranks-per-node", a->o.ranks_per_node, "GPUs per node")->capture_default_str();
  v->add_option("--intra-node-gbs", a->o.intra_node_gbs, "GB/s per rank inside a node (NVLink)")
      ->capture_default_str();
  v->add_option("--inter-node-gbs", a->o.inter_node_gbs, "GB/s per rank between nodes")
      ->capture_default_str();
  v->add_flag("--json", a->json, "one JSON object instead of the table");
  v->callback([a, action] {
    *action = [a] {
      a->o.bf16 = a->precision == "bf16";
      const auto spec = model::load_model_spec(a->model);
      const auto plan = bench::make_plan(spec, a->o);
      std::cout << (a->json ? bench::plan_to_json(spec, a->o, plan) + "\n"
                            : bench::plan_to_text(spec, a->o, plan));
      return 0;
    };
  });
}

}  // namespace

CLIPPER_REGISTER_VERB(plan, setup_plan_verb);

}  // namespace clipper::cli
