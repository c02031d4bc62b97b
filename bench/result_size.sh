#!/usr/bin/env bash
# What one result stores for a large radiograph: `radsight analyze` (the same pipeline and
# pictures the service stores per result) on a SIZE×SIZE phantom chest radiograph, then the
# size of each artefact, what is stored with the result, and what it is once the overlay was read. Sizes do not depend on the build mode, so a debug binary
# serves as well as a release one (RADSIGHT_BIN; default target/release/radsight, built if absent).
#
#   bench/result_size.sh                  # 2048×2048
#   SIZE=3000 RADSIGHT_BIN=target/debug/radsight bench/result_size.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${RADSIGHT_BIN:-target/release/radsight}
SIZE=${SIZE:-2048}
[ -x "$BIN" ] || cargo build --release --locked
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$BIN" models phantoms --out "$work/in" --count 1 --size "$SIZE" >/dev/null
RADSIGHT_ANALYSIS__MODELS_DIR="$PWD/models" "$BIN" analyze "$work/in" --out "$work/out" >/dev/null 2>&1 ||
  { echo "radsight analyze failed" >&2; exit 1; }
# The service stores every file but the overlay (`*.saliency.png`) with the result; the overlay
# is blended from the image and the heat map on its first read and kept from then on.
stored=0
overlay=0
for f in "$work"/out/*; do
  case "$f" in *.json) continue ;; esac
  n=$(stat -c %s "$f")
  case "$f" in *.saliency.png) overlay=$((overlay + n)) ;; *) stored=$((stored + n)) ;; esac
  printf '%-40s %12d bytes\n' "$(basename "$f")" "$n"
done
mb() { python3 -c "print(round($1/1e6, 2))"; }
printf '%-40s %12d bytes (%s MB)\n' "stored with the result ($SIZE×$SIZE)" "$stored" "$(mb "$stored")"
printf '%-40s %12d bytes (%s MB)\n' "after the overlay's first read" "$((stored + overlay))" "$(mb $((stored + overlay)))"
