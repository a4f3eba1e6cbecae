#!/usr/bin/env bash
# Prepares .gpulibs/ (ignored by git, ~10 MB): Debian's shared libraries and headers for the
# LibTorch-only targets (yaml-cpp, spdlog + fmt, CLI11, nlohmann-json, GoogleTest, zlib), unpacked
# so that a GPU machine with nothing but torch, nvcc, cmake and ninja can build clipper.
# Run here, then carry .gpulibs with the device call that runs scripts/gpu/check.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
pkgs=(libyaml-cpp-dev libyaml-cpp0.7 libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 libcli11-dev
      nlohmann-json3-dev libgtest-dev zlib1g-dev)
rm -rf .gpulibs
mkdir -p .gpulibs/debs .gpulibs/root
chmod 777 .gpulibs/debs
(cd .gpulibs/debs && apt-get download "${pkgs[@]}" >/dev/null)
for f in .gpulibs/debs/*.deb; do dpkg -x "$f" .gpulibs/root; done
rm -rf .gpulibs/debs .gpulibs/root/usr/share/doc .gpulibs/root/usr/share/man
du -sh .gpulibs
