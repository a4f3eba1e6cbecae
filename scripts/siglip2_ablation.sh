#!/usr/bin/env bash
# The ablation of SigLIP 2's terms (issue 29 item 4; docs/benchmarks.md "SigLIP 2's terms"):
# tiny-siglip2 at 64 x 64 pixels (8 x 8 patches of 8) trained five times on synthetic
# localisation shards (scripts/make_region_shards.py: one Fashion-MNIST item per canvas, its box
# and class name as a region, "a photo of a CLASS" as caption): with every term, without LocCa,
# without SILC, without masked prediction and with the sigmoid loss alone. Each run reports the
# zero-shot top-1 on the test split and `clipper probe-patches` (a linear probe of the patch
# features: each patch's class or background) on the same shards.
#   scripts/siglip2_ablation.sh [extra --set arguments for every run]
# Environment: ABLATION_EPOCHS (3), ABLATION_SMALL_TOKENIZER (1: a 360-piece SentencePiece model
# trained on the split's texts instead of CLIP's tokenizer), ABLATION_START (loss.siglip2.start_fraction, 0.5: in a run
# this short the paper's 0.8 leaves SILC and masked prediction a few dozen steps), ABLATION_DATA
# (data/fmnist-regions), CLIPPER_BUILD_DIR (build).
set -euo pipefail
cd "$(dirname "$0")/.."
clipper=${CLIPPER_BUILD_DIR:-build}/bin/clipper
data=${ABLATION_DATA:-data/fmnist-regions}
python=.venv/bin/python
[ -x "$python" ] || python=python3
[ -f "$data/train/sizes.json" ] ||
  "$python" scripts/make_region_shards.py "$data" --train 4000 --test 1000 --max-items 1
tag=${ABLATION_TAG:-siglip2-ablation}
mkdir -p runs
model=runs/$tag-model.yaml
vocab=(-e 's/vocab_size: 49408/vocab_size: 49408/')
if [ "${ABLATION_SMALL_TOKENIZER:-0}" = 1 ]; then
  # A 360-piece BPE SentencePiece model of the training split's captions and region sequences
  # (the LocCa tasks' texts, boxes quantized as the trainer does with loss.siglip2.box_bins 500):
  # CLIP's 49,408-way softmax made LocCa's three decoder passes 10 times the step time.
  "$python" - "$data" runs/$tag-corpus.txt <<'PY'
import glob, json, sys, tarfile
lines = []
for shard in sorted(glob.glob(sys.argv[1] + "/train/*.tar")):
    with tarfile.open(shard) as tar:
        for m in tar.getmembers():
            if m.name.endswith(".txt"):
                lines.append(tar.extractfile(m).read().decode().strip())
            elif m.name.endswith(".json"):
                for r in json.loads(tar.extractfile(m).read())["regions"]:
                    box = " ".join(str(round(v * 499)) for v in r["box"])
                    lines += [f"aref: {r['phrase']} : {box}", f"gcap: {box} : {r['phrase']}"]
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
PY
  "$clipper" tokenizer train --model-type bpe --vocab-size 360 --input runs/$tag-corpus.txt \
    --out "runs/$tag-tok/sp" >/dev/null
  vocab=(-e 's/vocab_size: 49408/vocab_size: 361/'
         -e "s|tokenizer: clip|tokenizer: 'sentencepiece:$PWD/runs/$tag-tok/sp.model'|")
fi
sed -e 's/image_size: 28/image_size: 64/' -e 's/patch_size: 7/patch_size: 8/' "${vocab[@]}" \
  configs/models/tiny-siglip2.yaml >"$model"
common=(--set model.name="$model" --set loss.kind=siglip --set train.ema_decay=0.99
        --set train.batch_size=64 --set train.epochs="${ABLATION_EPOCHS:-3}"
        --set optim.warmup_steps=20 --set train.log_every=20 --set checkpoint.every_steps=100000
        --set "data.train_shards=$data/train/train-{00000..00003}.tar"
        --set data.regions_key=json --set data.workers=1
        --set "eval.zeroshot_shards=$data/test/test-00000.tar"
        --set loss.siglip2.start_fraction="${ABLATION_START:-0.5}"
        --set loss.siglip2.local_views=4 --set loss.siglip2.head_hidden=256
        --set loss.siglip2.head_bottleneck=64 --set loss.siglip2.head_prototypes=1024)
declare -A terms=(
  [all]="true true true" [no_locca]="false true true" [no_silc]="true false true"
  [no_masked]="true true false" [sigmoid_only]="false false false")
printf '%-13s %8s %10s %10s %8s %8s\n' variant top-1 patch-acc recall mIoU seconds
for v in all no_locca no_silc no_masked sigmoid_only; do
  read -r l s m <<<"${terms[$v]}"
  log=runs/$tag-$v.log
  start=$(date +%s)
  "$clipper" train configs/demo.yaml "${common[@]}" --set train.run_name="$tag-$v" \
    --set loss.siglip2.locca=$l --set loss.siglip2.silc=$s --set loss.siglip2.masked=$m "$@" \
    >"$log" 2>&1 || { echo "$v failed: see $log"; exit 1; }
  took=$(($(date +%s) - start))
  top1=$(grep -o 'zero-shot on [0-9]* images: top-1 [0-9.]*' "$log" | tail -1 | awk '{print $NF}')
  "$clipper" probe-patches --weights "runs/$tag-$v/export" --data "$data" \
    --classes configs/data/fashion_mnist.yaml --device cpu --out "runs/$tag-$v-probe.json" \
    >>"$log" 2>&1 || { echo "$v: probe failed: see $log"; exit 1; }
  read -r acc recall iou < <("$python" -c 'import json,sys; d=json.load(open(sys.argv[1]));
print(d["patch_acc"], d["patch_mean_per_class_recall"], d["patch_mean_iou"])' \
    "runs/$tag-$v-probe.json")
  printf '%-13s %8s %10.4f %10.4f %8.4f %8s\n' "$v" "$top1" "$acc" "$recall" "$iou" "$took"
done
