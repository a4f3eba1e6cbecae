#!/usr/bin/env bash
# Sets up (installs what is missing, builds) and runs every test with ctest.
# Extra arguments go to ctest, e.g. `scripts/test.sh -L unit` for the quick subset.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build_dir=${CLIPPER_BUILD_DIR:-build}
echo "[test] ctest in $build_dir"
start=$(date +%s)
ctest --test-dir "$build_dir" --output-on-failure -j"${CLIPPER_TEST_JOBS:-2}" "$@"
echo "[test] tests done in $(( $(date +%s) - start )) s"
