#!/usr/bin/env bash
# Builds unit tests with AddressSanitizer + UndefinedBehaviorSanitizer (clang, build folder
# build-asan) and runs them (ctest label unit). With --tsan, builds the loader tests with
# ThreadSanitizer instead (build-tsan); see docs/reliability.md for what LibTorch allows.
#
#   scripts/sanitize.sh [--tsan] [TEST_TARGET...]
#
# Default targets: the suites of the parsers and the loader that do not need the whole CLI built
# (core, config, data image + loader, checkpoint, world). `scripts/sanitize.sh all` builds every
# unit test (the full project under ASan: about an hour on 2 cores).
# Environment: CLIPPER_JOBS (build jobs), CLIPPER_SAN_BUILD_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=asan
if [ "${1:-}" = "--tsan" ]; then mode=tsan; shift; fi
if [ $mode = asan ]; then
  flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
  default="clipper_test_core clipper_test_config clipper_test_data_image clipper_test_data_loader
           clipper_test_checkpoint clipper_test_world"
else
  flags="-fsanitize=thread -fno-omit-frame-pointer -g"
  default="clipper_test_data_loader"
fi
build=${CLIPPER_SAN_BUILD_DIR:-build-$mode}
targets=${*:-$default}
if [ ! -f "$build/build.ninja" ]; then
  cmake -G Ninja -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -Wno-dev \
    -DCMAKE_CXX_COMPILER="${CLIPPER_SAN_CXX:-clang++}" -DCMAKE_CXX_FLAGS="$flags" \
    -DCMAKE_EXE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags"
fi
mkdir -p "$build/share/clipper"
vocab=$(ls build/share/clipper/bpe_simple_vocab_16e6.txt.gz \
          .venv/lib/python3*/site-packages/open_clip/bpe_simple_vocab_16e6.txt.gz 2>/dev/null | head -1)
[ -n "$vocab" ] && cp -n "$vocab" "$build/share/clipper/" || true
if [ "$targets" = all ]; then
  cmake --build "$build" -- -j"${CLIPPER_JOBS:-$(nproc)}"
else
  # shellcheck disable=SC2086
  cmake --build "$build" -- -j"${CLIPPER_JOBS:-$(nproc)}" $targets
fi
# Leaks: LibTorch, OpenCV and ICU keep one-time allocations until exit.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/fuzz/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/fuzz/tsan.supp}
# Only the tests of the executables built: their names are the suites' prefixes in ctest.
# One group for all suites: CMake's regular expressions allow only a few parenthesised groups.
suites=""
for t in $targets; do
  [ "$t" = all ] && { suites=all; break; }
  exe=$(find "$build/tests" -name "$t" -type f | head -1)
  [ -x "$exe" ] || { echo "sanitize: $t was not built" >&2; exit 1; }
  s=$("$exe" --gtest_list_tests | grep -v '^ ' | tr -d '.' | paste -sd'|')
  suites="${suites:+$suites|}$s"
done
regex="^(${suites})\\."
[ "$suites" = all ] && regex="."
ctest --test-dir "$build" -L unit -R "$regex" --no-tests=error --output-on-failure \
  -j"${CLIPPER_TEST_JOBS:-2}"
