#!/usr/bin/env bash
# The whole GPU check, in one run on a machine with one NVIDIA GPU (an H200 here), its own
# torch 2.11.0+cu130, nvcc, cmake and ninja, no network. Needs .gpulibs/ (scripts/gpu/fetch_libs.sh).
#   1. builds what the check runs (the `clipper` binary and the `cuda` tests) in the LibTorch-only
#      configuration (CLIPPER_WITH_DATA=OFF, CLIPPER_CUDA_TESTS=ON) against that torch
#   2. runs the tests labelled `cuda`
#   3. runs the training-step benchmarks: ViT-B-32 and ViT-B-16 (bf16, batch 256 and 512), RN50
# Results go to $OUT (or ./gpu-results): build.log, cuda_tests.log, bench.jsonl, bench.txt, summary.txt.
#
# --build-only: step 1 alone, on the build machine (scripts/test.sh runs it, so that the GPU
# configuration never stops building unnoticed): the .venv's torch (+cu130: the CUDA code paths
# compile against the CUDA toolkit here), the system's libraries instead of .gpulibs, ccache on,
# into build-gpu/ (CLIPPER_GPU_BUILD_DIR); the log goes to build-gpu.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
build_only=0
[ "${1:-}" = "--build-only" ] && build_only=1
start=$(date +%s)
targets=(clipper clipper_test_cuda)  # all that the tests and the benchmarks below run
if [ $build_only = 1 ]; then
  build_dir=${CLIPPER_GPU_BUILD_DIR:-build-gpu}
  log=$PWD/$build_dir.log
  py=${CLIPPER_PYTHON:-$PWD/.venv/bin/python}
  [ -x "$py" ] || { echo "[gpu-build] no $py: run scripts/setup.sh first"; exit 1; }
  say() { echo "[gpu-build +$(( $(date +%s) - start ))s] $*"; }
  # The cuda tests include the CUDA runtime's headers: without a CUDA toolkit there is nothing
  # to check against (say so; CI machines here have /usr/local/cuda).
  if ! command -v nvcc >/dev/null && [ ! -x /usr/local/cuda/bin/nvcc ]; then
    say "SKIPPED: no CUDA toolkit (nvcc) on this machine, the GPU configuration is not built"
    exit 0
  fi
  torch_dir=$(ls -d "$PWD"/.venv/lib/python3*/site-packages/torch/share/cmake/Torch 2>/dev/null | head -n1)
  [ -n "$torch_dir" ] || { echo "[gpu-build] no torch in .venv: run scripts/setup.sh first"; exit 1; }
  if [ ! -f "$build_dir/build.ninja" ]; then
    say "configure $build_dir (CLIPPER_WITH_DATA=OFF, CLIPPER_CUDA_TESTS=ON)"
    cmake -G Ninja -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -Wno-dev \
      -DCLIPPER_WITH_DATA=OFF -DCLIPPER_CUDA_TESTS=ON -DTorch_DIR="$torch_dir" \
      -DCLIPPER_PYTHON="$py" -DTORCH_CUDA_ARCH_LIST=9.0 > "$log" 2>&1 \
      || { say "configure FAILED (see $log)"; tail -40 "$log"; exit 1; }
  fi
  say "build ${targets[*]} in $build_dir"
  cmake --build "$build_dir" --target "${targets[@]}" -- -j"${CLIPPER_JOBS:-$(nproc)}" >> "$log" 2>&1 \
    || { say "build FAILED (see $log)"; grep -B2 -A12 "error" "$log" | head -80; exit 1; }
  say "build done"
  exit 0
fi

out=${OUT:-$PWD/gpu-results}
mkdir -p "$out"
stamp() { echo "[check +$(( $(date +%s) - start ))s] $*" | tee -a "$out/summary.txt"; }
libs=$PWD/.gpulibs/root
[ -d "$libs" ] || { echo "missing .gpulibs: run scripts/gpu/fetch_libs.sh first and carry .gpulibs"; exit 1; }
export LD_LIBRARY_PATH="$libs/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
py=$(command -v python3)
torch_dir=$($py -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'share', 'cmake', 'Torch'))")
stamp "torch $($py -c 'import torch; print(torch.__version__, torch.version.cuda)'); $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)"

stamp "configure"
cmake -G Ninja -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -Wno-dev \
  -DCLIPPER_WITH_DATA=OFF -DCLIPPER_CUDA_TESTS=ON -DCLIPPER_USE_CCACHE=OFF \
  -DTorch_DIR="$torch_dir" -DCLIPPER_PYTHON="$py" -DTORCH_CUDA_ARCH_LIST=9.0 \
  -DCMAKE_PREFIX_PATH="$libs/usr" > "$out/build.log" 2>&1 || { stamp "configure FAILED"; tail -40 "$out/build.log"; exit 1; }
stamp "build"
cmake --build build-gpu --target "${targets[@]}" -j"$(nproc)" >> "$out/build.log" 2>&1 || { stamp "build FAILED"; grep -B2 -A12 "error" "$out/build.log" | head -80; exit 1; }
stamp "build done"

stamp "cuda tests"
ctest --test-dir build-gpu -L cuda --output-on-failure --timeout 300 > "$out/cuda_tests.log" 2>&1
tests_rc=$?
tail -5 "$out/cuda_tests.log" | tee -a "$out/summary.txt"

bench() {
  stamp "bench $*"
  timeout 240 build-gpu/bin/clipper bench train --device cuda --json "$out/bench.jsonl" "$@" >> "$out/bench.txt" 2>&1 \
    || echo "bench $* FAILED (rc $?)" | tee -a "$out/summary.txt"
}
bench --model ViT-B-32 --batch 256 --steps 20
bench --model ViT-B-32 --batch 512 --steps 20
bench --model ViT-B-16 --batch 256 --steps 15
bench --model ViT-B-16 --batch 512 --steps 15
bench --model RN50 --batch 256 --steps 15
bench --model ViT-B-16 --batch 256 --steps 10 --precision fp32
# Fast path with and without: the loss read back every step (a host sync per step) against the
# default every 10.
bench --model ViT-B-32 --batch 256 --steps 20 --sync-every 1
# and the ResNet tower NCHW against channels-last (the default).
bench --model RN50 --batch 256 --steps 15 --no-channels-last
# and PyTorch's foreach AdamW instead of the fused kernel, the math attention instead of flash.
bench --model ViT-B-32 --batch 256 --steps 20 --no-fused-adamw
bench --model ViT-B-32 --batch 256 --steps 20 --sdpa math
# CUDA-graph capture of the whole step, where launch overhead weighs most (small per-step work)
# and on ViT-B-32.
bench --model tiny-vit --batch 256 --steps 30 --cuda-graph
bench --model ViT-B-32 --batch 256 --steps 20 --cuda-graph
cat "$out/bench.txt" >> "$out/summary.txt"
stamp "done (cuda tests rc $tests_rc)"
exit $tests_rc
