#!/usr/bin/env bash
# Trainable-state bytes per rank at every dist.zero stage, measured against `clipper plan`:
# `clipper bench train` under `clipper launch` (Gloo, CPU, fp32) for W in WORLDS and zero 0..3,
# one timed step after one warm-up; each rank reports the most parameter and gradient bytes it held
# at once in its last step (TrainStep::sharding_counters) and its AdamW state, and the bytes the
# process group was handed. Prints a markdown table in MB (10^6 bytes), the worst rank of each run.
#   scripts/bench/zero_memory.sh [MODEL] [WORLDS] [BATCH]      (defaults ViT-B-16 "1 2 4" 1)
# Wrap it in the build lock on a shared machine.
set -euo pipefail
MODEL=${1:-ViT-B-16}
WORLDS=${2:-1 2 4}
B=${3:-1}
BIN=${CLIPPER_BIN:-build/bin/clipper}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "$MODEL, batch $B per rank, fp32, CPU/Gloo; MB per rank, measured / plan"
echo "| W | zero | parameters | gradients | optimizer | total | collectives per step |"
echo "|---|---|---|---|---|---|---|"
for w in $WORLDS; do
  for z in 0 1 2 3; do
    OMP_NUM_THREADS=1 "$BIN" launch --nproc-per-node "$w" -- bench train --model "$MODEL" \
      --batch "$B" --device cpu --precision fp32 --threads 1 --steps 1 --warmup 1 \
      --breakdown-steps 0 --zero "$z" --json "$tmp/bench.jsonl" >/dev/null
    "$BIN" plan --model "$MODEL" --world "$w" --batch "$B" --zero "$z" --precision fp32 --json \
      >"$tmp/plan.json"
    python3 - "$tmp/bench.jsonl" "$tmp/plan.json" "$w" "$z" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
plan = json.load(open(sys.argv[2]))
worst = lambda k: max(r[k] for r in runs) / 1e6
m = [worst("parameter_peak_bytes"), worst("gradient_peak_bytes"), worst("optimizer_bytes")]
p = [plan["parameters"] / 1e6, plan["gradients"] / 1e6, plan["optimizer"] / 1e6]
comm_m = worst("payload_bytes_per_step")
comm_p = sum(c["payload_bytes"] for c in plan["collectives"]) / 1e6
cells = [f"{a:,.0f} / {b:,.0f}" for a, b in zip(m + [sum(m)], p + [sum(p)])]
print(f"| {sys.argv[3]} | {sys.argv[4]} | " + " | ".join(cells) + f" | {comm_m:,.0f} / {comm_p:,.0f} |")
PY
    rm -f "$tmp/bench.jsonl"
  done
done
