#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz/ with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer in their own build folder, then runs each, one after the other,
# starting from its seed corpus (tests/fuzz/corpus/NAME/), until SECONDS (default 60) have passed
# or CLIPPER_FUZZ_RUNS executions (default 1000000) are done, whichever comes first.
#
#   scripts/fuzz.sh [SECONDS] [NAME...]      e.g. scripts/fuzz.sh 600 torch_pickle safetensors
#                                            scripts/fuzz.sh world (60 s, world only)
#
# New inputs libFuzzer finds go to $BUILD/corpus/NAME/, crashes to $BUILD/crashes/NAME/, logs to
# $BUILD/logs/NAME.log; the last line printed per harness gives its executions. A crash: fix it,
# then copy the input into tests/fuzz/corpus/NAME/ as a regression (ctest -L fuzz replays it).
# Environment: CLIPPER_FUZZ_BUILD_DIR (default build-fuzz), CLIPPER_JOBS (build jobs),
# CLIPPER_FUZZ_RUNS (execution cap per harness; -1: no cap, time only),
# CLIPPER_FUZZ_SKIP_BUILD=1 (run what is built), CLIPPER_FUZZ_BUILD_ONLY=1 (build, run nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
all="safetensors torch_pickle tar_stream image config shard_list loader_state checkpoint tokenizer world idx"
seconds=60
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
  seconds=$1
  shift
fi
targets=${*:-$all}
for t in $targets; do  # a misspelt name, or SECONDS after the names, is an error, not "run all"
  if [[ " $all " != *" $t "* ]]; then
    echo "fuzz.sh: unknown harness '$t'; expected [SECONDS] [NAME...] with NAME one of: $all" >&2
    exit 2
  fi
done
runs=${CLIPPER_FUZZ_RUNS:-1000000}
build=${CLIPPER_FUZZ_BUILD_DIR:-build-fuzz}
cxx=${CLIPPER_FUZZ_CXX:-clang++}

if [ "${CLIPPER_FUZZ_SKIP_BUILD:-0}" != 1 ]; then
  if [ ! -f "$build/build.ninja" ]; then
    cmake -G Ninja -S tests/fuzz -B "$build" -DCMAKE_CXX_COMPILER="$cxx" -Wno-dev
  fi
  names=()
  for t in $targets; do names+=("fuzz_$t"); done
  cmake --build "$build" -- -j"${CLIPPER_JOBS:-$(nproc)}" "${names[@]}"
fi
[ "${CLIPPER_FUZZ_BUILD_ONLY:-0}" = 1 ] && exit 0

vocab=$(ls build/share/clipper/bpe_simple_vocab_16e6.txt.gz \
          .venv/lib/python3*/site-packages/open_clip/bpe_simple_vocab_16e6.txt.gz 2>/dev/null | head -1)
export CLIPPER_BPE_VOCAB=${CLIPPER_BPE_VOCAB:-$vocab}
# LibTorch is not instrumented: LeakSanitizer would report its one-time allocations.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1:abort_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/fuzz/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for t in $targets; do
  mkdir -p "$build/corpus/$t" "$build/crashes/$t" "$build/logs"
  echo "[fuzz] $t for ${seconds}s or $runs executions"
  start=$(date +%s)
  set +e
  "$build/fuzz_$t" -max_total_time="$seconds" -runs="$runs" -timeout=20 -rss_limit_mb=3072 -print_final_stats=1 \
    -artifact_prefix="$build/crashes/$t/" "$build/corpus/$t" "tests/fuzz/corpus/$t" \
    > "$build/logs/$t.log" 2>&1
  rc=$?
  set -e
  took=$(($(date +%s) - start))
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$build/logs/$t.log" | grep -o '[0-9]*$' || true)
  echo "[fuzz] $t: exit $rc, ${execs:-?} executions in ${took}s, $(ls "$build/crashes/$t" | wc -l) artifacts"
  [ $rc -eq 0 ] || status=1
done
exit $status
