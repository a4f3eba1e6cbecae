#!/usr/bin/env bash
# Shard writer speed: `clipper shards --from-folder` on the loader benchmark's photo crops
# (N_CROPS 256-px JPEGs, quality 95, with captions), decoded, resized to 256 and re-encoded
# (quality 95), with each thread count given; prints the summary lines.
#   scripts/bench/shard_writer_speed.sh [THREADS...]     # default: 1 2
set -euo pipefail
cd "$(dirname "$0")/../.."
n_crops=${N_CROPS:-2000}
clipper=${CLIPPER_BUILD_DIR:-build}/bin/clipper
py=${CLIPPER_PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
photos=$(scripts/bench/fetch_photos.sh)
crops=.cache/bench/crops-$n_crops
if [ ! -d "$crops" ]; then
  "$py" scripts/bench/make_photo_crops.py "$photos" "$crops.tmp" "$n_crops"
  mv "$crops.tmp" "$crops"
fi
out=.cache/bench/writer-out
echo "[bench] $(nproc) cores, $n_crops crops ($(du -sh "$crops" | cut -f1)), $(date -u '+%Y-%m-%d %H:%M UTC')"
for t in "${@:-1 2}"; do
  for n in $t; do
    rm -rf "$out"
    "$clipper" shards "$out" --from-folder "$crops" --resize 256 --threads "$n" --progress-every 0 \
      --samples-per-shard 1000
  done
done
rm -rf "$out"
