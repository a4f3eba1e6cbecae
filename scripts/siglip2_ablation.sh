#!/usr/bin/env bash
# The ablation of SigLIP 2's terms (issue 29 item 4, docs/training.md "SigLIP 2's objective"):
# tiny-siglip2 trained on the demo's Fashion-MNIST shards (configs/demo.yaml; scripts/demo.sh
# makes them) five times, with every term, without LocCa, without SILC, without masked
# prediction and with the sigmoid loss alone; prints each run's zero-shot top-1 on the 10,000
# test images. Extra arguments go to every `clipper train` (e.g. --set train.epochs=1).
# With CLIPPER_PROBE set to a command, it is run as "$CLIPPER_PROBE RUN_DIR/export" after each
# run and its last line printed (the patch-level probe, `clipper probe-patches`, once it exists).
set -euo pipefail
cd "$(dirname "$0")/.."
clipper=${CLIPPER_BUILD_DIR:-build}/bin/clipper
[ -f data/fashion-mnist/train/sizes.json ] || { echo "run scripts/demo.sh first (the shards)"; exit 1; }
tag=${ABLATION_TAG:-siglip2-ablation-$(date +%s)}
common=(--set model.name=tiny-siglip2 --set loss.kind=siglip --set train.ema_decay=0.99
        --set train.batch_size=64
        --set loss.siglip2.local_views=4 --set loss.siglip2.head_hidden=256
        --set loss.siglip2.head_bottleneck=64 --set loss.siglip2.head_prototypes=1024)
declare -A terms=(
  [all]="true true true" [no_locca]="false true true" [no_silc]="true false true"
  [no_masked]="true true false" [sigmoid_only]="false false false")
printf '%-14s %s\n' variant "zero-shot top-1"
for v in all no_locca no_silc no_masked sigmoid_only; do
  read -r l s m <<<"${terms[$v]}"
  log=/tmp/$tag-$v.log
  "$clipper" train configs/demo.yaml "${common[@]}" --set train.run_name=$tag-$v \
    --set loss.siglip2.locca=$l --set loss.siglip2.silc=$s --set loss.siglip2.masked=$m "$@" \
    >"$log" 2>&1 || { echo "$v failed: see $log"; exit 1; }
  top1=$(grep -o 'zero-shot on [0-9]* images: top-1 [0-9.]*' "$log" | tail -1 | awk '{print $NF}')
  line="$top1"
  if [ -n "${CLIPPER_PROBE:-}" ]; then
    line="$line | $($CLIPPER_PROBE runs/$tag-$v/export 2>&1 | tail -1)"
  fi
  printf '%-14s %s\n' "$v" "$line"
done
