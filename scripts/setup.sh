#!/usr/bin/env bash
# Installs everything clipper needs and builds it (Release, Ninja, ccache). Idempotent: when
# nothing is missing it only runs the incremental build (seconds).
#   CLIPPER_BUILD_DIR   build folder (default: build)
#   CLIPPER_NO_BUILD=1  install only
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build_dir=${CLIPPER_BUILD_DIR:-build}
say() { echo "[setup] $*"; }

# --- Debian packages ------------------------------------------------------------------------
apt_packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libyaml-cpp-dev libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev libgtest-dev libgmock-dev
  libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev
  libturbojpeg0-dev libjpeg62-turbo-dev libsentencepiece-dev sentencepiece libarchive-dev libicu-dev zlib1g-dev
  python3-venv dataset-fashion-mnist
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Python venv with the torch wheel (LibTorch) and the test-only clients --------------------
req=scripts/requirements.txt
stamp=.venv/.clipper-requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "creating .venv with $(grep -E '^torch==' "$req") and the test clients (first time: a few minutes)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r "$req"
  echo "$want" > "$stamp"
fi

# --- ccache ---------------------------------------------------------------------------------
if command -v ccache >/dev/null; then
  ccache --max-size=8G >/dev/null 2>&1 || true
fi

# --- OpenCLIP's BPE vocabulary, for the "clip" tokenizer ------------------------------------
# It ships inside the open-clip-torch wheel; the build tree keeps a copy in share/clipper/ (and
# `cmake --install` puts it in <prefix>/share/clipper/, where bin/clipper finds it).
vocab_src=$(ls .venv/lib/python3*/site-packages/open_clip/bpe_simple_vocab_16e6.txt.gz 2>/dev/null | head -n1 || true)
if [ -n "$vocab_src" ]; then
  mkdir -p "$build_dir/share/clipper"
  cmp -s "$vocab_src" "$build_dir/share/clipper/bpe_simple_vocab_16e6.txt.gz" \
    || cp "$vocab_src" "$build_dir/share/clipper/"
else
  say "warning: open_clip's bpe_simple_vocab_16e6.txt.gz not found in .venv; the clip tokenizer will not load"
fi

# --- transformers 4 beside the venv, for one oracle only ----------------------------------------
# open_clip 3.3.0's CoCa.generate imports transformers' BeamSearchScorer, gone since 4.56; the
# caption interop test (CocaInterop.GreedyAndBeamCaptionsEqualOpenClips) runs it with this folder
# first on PYTHONPATH. The venv keeps transformers 5 for everything else.
tf4="$build_dir/py-tf4"
if [ ! -f "$tf4/transformers/__init__.py" ]; then
  say "installing transformers 4.46.3 into $tf4 (open_clip's CoCa generate needs it)"
  .venv/bin/python -m pip install -q --target "$tf4" --no-deps transformers==4.46.3 \
    huggingface-hub==0.26.5 tokenizers==0.20.3
fi

# --- Configure and build ----------------------------------------------------------------------
[ "${CLIPPER_NO_BUILD:-0}" = 1 ] && exit 0
if [ ! -f "$build_dir/build.ninja" ]; then
  say "configuring $build_dir (Release, Ninja)"
  cmake -G Ninja -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -Wno-dev > "$build_dir.configure.log" 2>&1 \
    || { cat "$build_dir.configure.log"; exit 1; }
fi
say "building ($build_dir)"
start=$(date +%s)
# Building LibTorch code takes ~1.5 GiB per compiler; two jobs fit the smallest machine.
cmake --build "$build_dir" -- -j"${CLIPPER_JOBS:-$(nproc)}"
say "build done in $(( $(date +%s) - start )) s"
