#!/usr/bin/env bash
# Sets up (installs what is missing, builds) and runs every test with ctest.
# Also builds the GPU check's configuration (scripts/gpu/check.sh --build-only).
# Extra arguments go to ctest, e.g. `scripts/test.sh -L unit` for the quick subset.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The GPU check's configuration (LibTorch-only parts, the cuda tests) must keep building: a GPU
# machine's minutes are not for link errors. A second build folder, build-gpu/ (ccache).
scripts/gpu/check.sh --build-only
build_dir=${CLIPPER_BUILD_DIR:-build}
echo "[test] ctest in $build_dir"
start=$(date +%s)
# Idle OpenMP threads sleep instead of spinning: tests run side by side on few cores (also set
# per test in cmake/clipper_target.cmake; here for every process a test starts).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
ctest --test-dir "$build_dir" --output-on-failure -j"${CLIPPER_TEST_JOBS:-2}" "$@"
echo "[test] tests done in $(( $(date +%s) - start )) s"
