#!/usr/bin/env bash
# The benchmarks' photographs: the JPEGs in Debian's opencv-doc (examples/data/*.jpg, > 40 KB),
# unpacked into .cache/bench/photos (the .deb is downloaded with apt-get download, not installed).
#   scripts/bench/fetch_photos.sh      # prints the folder
set -euo pipefail
cd "$(dirname "$0")/../.."
cache=.cache/bench
photos=$cache/photos
if [ ! -d "$photos" ] || [ -z "$(ls "$photos" 2>/dev/null)" ]; then
  mkdir -p "$cache" "$photos"
  echo "[bench] fetching the OpenCV sample photographs (Debian opencv-doc)" >&2
  (cd "$cache" && apt-get download opencv-doc >/dev/null 2>&1)
  deb=$(ls "$cache"/opencv-doc_*.deb | head -1)
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$cache" --wildcards './usr/share/doc/opencv-doc/examples/data/*.jpg'
  find "$cache/usr/share/doc/opencv-doc/examples/data" -name '*.jpg' -size +40k -exec cp {} "$photos" \;
  rm -rf "$cache/usr" "$deb"
fi
echo "$photos"
