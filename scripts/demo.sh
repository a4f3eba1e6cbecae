#!/usr/bin/env bash
# The main job: set up, turn Debian's Fashion-MNIST into WebDataset shards (first run only), train
# the demo model on the CPU (configs/demo.yaml), evaluate zero-shot on the 10,000 test images and
# export the weights for open_clip. Extra arguments go to `clipper train` (e.g. --set train.epochs=1).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
clipper=${CLIPPER_BUILD_DIR:-build}/bin/clipper
"$clipper" --version

src=/usr/share/datasets/fashion-mnist
out=data/fashion-mnist
for split in train test; do
  if [ ! -f "$out/$split/sizes.json" ]; then
    prefix=$([ $split = train ] && echo train || echo t10k)
    echo "[demo] writing $split shards into $out/$split"
    "$clipper" shards "$out/$split" --prefix "$split" --resize 0 --classes configs/data/fashion_mnist.yaml \
      --from-idx "$src/$prefix-images-idx3-ubyte.gz" "$src/$prefix-labels-idx1-ubyte.gz"
  fi
done

echo "[demo] training (configs/demo.yaml)"
start=$(date +%s)
"$clipper" train configs/demo.yaml "$@" 2>&1 | tee /tmp/clipper-demo.log
run_dir=$(grep -o 'run runs/[^ ]*' /tmp/clipper-demo.log | head -1 | cut -d' ' -f2)
echo "[demo] finished in $(( $(date +%s) - start )) s; run folder $run_dir"
grep -o 'zero-shot on .*' /tmp/clipper-demo.log | tail -1 | sed 's/^/[demo] /'
echo "[demo] export: $run_dir/export (open_clip_model.safetensors, open_clip_config.json); loading it with open_clip:"
.venv/bin/python scripts/check_export.py "$run_dir/export" fmnist-vit
