#!/usr/bin/env bash
# The interop checks at full depth and vocabulary (ViT-B-32 and RN50 loaded by open_clip under
# their names, ViT-B-16-SigLIP, ViT-B-16-SigLIP2,
# ViT-SO400M-14-SigLIP: features of clipper's export in open_clip and transformers, and of their
# weights in clipper, <= 1e-5), and coca_ViT-B-32 whole as open_clip.create_model loads it by name. The test suite runs them cut to 2 blocks per tower (full sizes take minutes
# on 2 cores); this runs the same tests uncut. Needs a built tree (scripts/test.sh or setup.sh).
#   scripts/check_full_depth.sh [BUILD_DIR]      (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
CLIPPER_INTEROP_FULL_DEPTH=1 ctest --test-dir "$build" -R 'SiglipInterop\..*_TwoBlocks(BothWays)?$|OpenClipInterop\.(ViT_B_32_TwoBlocks|RN50_OneBottleneckPerStage)$|TransformersInterop\.ViT_B_32_TwoBlocks|CocaInterop.FeaturesLogits' \
  --output-on-failure --timeout 1800 -V | grep -E '^\S+: \[interop\]|tests passed|Failed|Passed'
