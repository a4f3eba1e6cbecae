#!/usr/bin/env bash
# Checkpoint stall: the same short CPU training run with synchronous and asynchronous saves
# (checkpoint.async false / true, alternated ROUNDS times), saving every EVERY steps. Prints per run
# the saves, the mean seconds training was blocked per save and the mean write time (from the
# "checkpoint ...: training blocked X s, write Y s" log lines) and samples/s over the run (batch x
# steps over the summed step times of metrics.jsonl, step 1 left out: each step's window includes
# any save that blocked it).
#   scripts/bench/checkpoint_stall.sh MODEL BATCH STEPS EVERY [ROUNDS] [--set k=v ...]
# Shards: Fashion-MNIST (Debian's dataset-fashion-mnist) through `clipper shards`, in .cache/bench.
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:?model}
batch=${2:?batch}
steps=${3:?steps}
every=${4:?every}
rounds=${5:-1}
shift $(($# < 5 ? $# : 5))
clipper=${CLIPPER_BUILD_DIR:-build}/bin/clipper
shards=.cache/bench/fmnist-shards
src=/usr/share/datasets/fashion-mnist
if [ ! -f "$shards/train-00003.tar" ]; then
  "$clipper" shards "$shards" --prefix train --resize 0 --samples-per-shard 2048 --limit 8192 \
    --classes configs/data/fashion_mnist.yaml \
    --from-idx "$src/train-images-idx3-ubyte.gz" "$src/train-labels-idx1-ubyte.gz" >/dev/null
fi
out=$(mktemp -d /tmp/clipper-ckpt-bench-XXXXXX)
trap 'rm -rf "$out"' EXIT
echo "[bench] $(date -u '+%F %H:%M') UTC, $(git rev-parse --short HEAD), $(nproc) cores: $model," \
  "batch $batch, $steps steps, a save every $every"
for round in $(seq "$rounds"); do
  for async in false true; do
    run=r$round-$async
    "$clipper" train configs/demo.yaml --set model.name="$model" --set train.batch_size="$batch" \
      --set train.max_steps="$steps" --set checkpoint.every_steps="$every" \
      --set checkpoint.async=$async --set checkpoint.keep_last=2 --set checkpoint.save_at_end=false \
      --set "data.train_shards=$shards/train-{00000..00003}.tar" --set data.workers=1 \
      --set train.output_dir="$out" --set train.run_name="$run" --set train.threads=2 \
      --set train.log_every=1 --set log.tensorboard=false --set log.progress_every_s=0 \
      --set eval.at_end=false --set eval.zeroshot_shards= "$@" >"$out/$run.out" 2>&1 \
      || { cat "$out/$run.out"; exit 1; }
    saves=$(grep -o 'training blocked [0-9.]* s, write [0-9.]* s' "$out/$run/logs/rank_0.log" |
      awk '{b += $3; w += $6; n++} END {printf "%d saves, blocked %.3f s/save, write %.3f s/save", n, b / n, w / n}')
    sps=$(grep -o '"perf/samples_per_s":[0-9.e+-]*' "$out/$run/metrics.jsonl" | cut -d: -f2 |
      awk -v b="$batch" 'NR > 1 {t += b / $1; n++} END {printf "%.1f samples/s", n * b / t}')
    echo "async=$async: $saves, $sps"
    [ -z "${KEEP:-}" ] || cp "$out/$run/metrics.jsonl" "$KEEP/$run.jsonl"
    rm -rf "${out:?}/$run/checkpoints"
  done
done
