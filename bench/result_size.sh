#!/usr/bin/env bash
# What one result stores for a large radiograph: `radsight analyze` (the same pipeline and
# pictures the service stores per result) on a SIZE×SIZE phantom chest radiograph, then the
# size of each artefact and their sum. Sizes do not depend on the build mode, so a debug binary
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
total=0
for f in "$work"/out/*; do
  case "$f" in *.json) continue ;; esac
  n=$(stat -c %s "$f")
  total=$((total + n))
  printf '%-40s %12d bytes\n' "$(basename "$f")" "$n"
done
printf '%-40s %12d bytes (%s MB)\n' "total ($SIZE×$SIZE source)" "$total" "$(python3 -c "print(round($total/1e6, 2))")"
