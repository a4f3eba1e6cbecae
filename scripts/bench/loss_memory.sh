#!/usr/bin/env bash
# Peak loss memory per rank (forward + backward, live CPU tensor bytes) against the world size,
# on Gloo: `clipper bench loss` under `clipper launch` for W = 1..MAX_W and every loss form.
#   scripts/bench/loss_memory.sh [BATCH] [DIM] [MAX_W]      (defaults 256 512 8)
# Prints a markdown table in MiB. Wrap it in the build lock on a shared machine.
set -euo pipefail
B=${1:-256}
D=${2:-512}
MAX_W=${3:-8}
BIN=${CLIPPER_BIN:-build/bin/clipper}
forms=("clip local|--kind clip" "clip full|--kind clip --full" "clip chunked|--kind clip --chunked"
       "siglip gather|--kind siglip --exchange gather"
       "siglip neighbour|--kind siglip --exchange neighbour"
       "siglip chunked|--kind siglip --chunked")
header="| W |"
rule="|---|"
for f in "${forms[@]}"; do header+=" ${f%%|*} |"; rule+="---|"; done
echo "batch $B per rank, dim $D, fp32; MiB above the features, worst rank"
echo "$header"
echo "$rule"
for ((w = 1; w <= MAX_W; ++w)); do
  row="| $w |"
  for f in "${forms[@]}"; do
    out=$(OMP_NUM_THREADS=1 "$BIN" launch --nproc-per-node "$w" -- bench loss ${f#*|} \
          --batch "$B" --dim "$D" 2>&1 | grep '^bench loss:')
    mib=$(sed -E 's/.*peak ([0-9.]+) MiB.*/\1/' <<<"$out")
    row+=" $mib |"
  done
  echo "$row"
done
