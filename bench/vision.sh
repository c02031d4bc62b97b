#!/usr/bin/env bash
# Vision benchmark (release): forward and forward+Grad-CAM latency of the committed
# radsight-phantom-cxr model, single image and batch of 8, FLOPs and GFLOP/s; then the same
# architecture and weights in PyTorch (CPU, 2 threads) on the same machine, and the ratios.
#
#   bench/vision.sh [ITERATIONS]        (default 50)
#
# PyTorch is bench-only: it is pip-installed into its own venv ($VISION_VENV, default
# /work/targets/vision/torch-venv), from the PyTorch CPU index, falling back to PyPI. If neither
# works the Rust half still runs and the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
ITERS="${1:-50}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/targets/vision}"
VENV="${VISION_VENV:-/work/targets/vision/torch-venv}"
MODEL=models/radsight-phantom-cxr
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "date: $(date -u +%FT%TZ)"
echo "commit: $(git rev-parse --short HEAD)"
echo "machine: $(nproc) cores (shared, noisy), $(free -g | awk '/Mem:/{print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average $(cut -d' ' -f1-3 /proc/loadavg)"

cargo build -q --release -p radsight-vision --example bench
echo "--- Rust (candle 0.11, CPU)"
"$CARGO_TARGET_DIR/release/examples/bench" models "$ITERS" "$WORK/ref.json" | tee "$WORK/rust.txt"

echo "--- PyTorch"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  "$VENV/bin/pip" install -q torch --index-url https://download.pytorch.org/whl/cpu \
    || "$VENV/bin/pip" install -q torch \
    || { echo "PyTorch could not be installed: no comparison"; exit 0; }
fi
"$VENV/bin/python" bench/vision_torch.py "$MODEL" "$ITERS" "$WORK/ref.json" | tee "$WORK/torch.txt"

echo "--- ratios (Rust time / PyTorch time; < 1 means Rust is faster)"
for key in forward_b1_ms forward_b8_ms gradcam_b1_ms; do
  r=$(awk -v k="$key" '$1==k{print $2}' "$WORK/rust.txt")
  t=$(awk -v k="$key" '$1==k{print $2}' "$WORK/torch.txt")
  awk -v k="$key" -v r="$r" -v t="$t" 'BEGIN{printf "%s rust %.3f torch %.3f ratio %.2f\n", k, r, t, r/t}'
done
