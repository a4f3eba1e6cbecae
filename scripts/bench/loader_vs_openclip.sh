#!/usr/bin/env bash
# Loader benchmark: clipper's loader and OpenCLIP's input pipeline on the same shards and the same
# number of threads, side by side in one run; prints both and the ratio.
#   scripts/bench/loader_vs_openclip.sh [THREADS] [SAMPLES]
# Shards: N_CROPS 256-px JPEGs (quality 95) cut from the photographs in Debian's opencv-doc
# (examples/data/*.jpg; the .deb is downloaded, only the photos are unpacked into .cache/bench).
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=${1:-1}
samples=${2:-4000}
n_crops=${N_CROPS:-4000}
clipper=${CLIPPER_BUILD_DIR:-build}/bin/clipper
py=${CLIPPER_PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
cache=.cache/bench
photos=$(scripts/bench/fetch_photos.sh)
shards=$cache/shards-$n_crops
if [ ! -f "$shards/sizes.json" ]; then
  echo "[bench] cutting $n_crops crops from $(ls "$photos" | wc -l) photographs"
  rm -rf "$cache/crops"
  "$py" scripts/bench/make_photo_crops.py "$photos" "$cache/crops" "$n_crops"
  "$clipper" shards "$shards" --from-folder "$cache/crops" --resize 0 --samples-per-shard 500 --prefix bench
  rm -rf "$cache/crops"
fi
n_shards=$(ls "$shards"/bench-*.tar | wc -l)
pattern="$shards/bench-{00000..$(printf %05d $((n_shards - 1)))}.tar"
echo "[bench] $(nproc) cores, $threads thread(s), $samples samples, shards $pattern ($(du -sh "$shards" | cut -f1))"
c=$("$clipper" bench loader "$pattern" --threads "$threads" --samples "$samples" --batch 256)
echo "$c"
o=$("$py" scripts/bench/openclip_loader.py "$pattern" --threads "$threads" --samples "$samples" --batch 256)
echo "$o"
cs=$(echo "$c" | sed -n 's/.*: \([0-9.]*\) samples\/s.*/\1/p')
os=$(echo "$o" | sed -n 's/.*: \([0-9.]*\) samples\/s.*/\1/p')
echo "[bench] clipper / openclip = $(echo "$cs $os" | awk '{printf "%.2f", $1 / $2}')x"
