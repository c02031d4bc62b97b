#!/usr/bin/env bash
# Vision benchmark (release): forward and forward+Grad-CAM latency of the committed
# radsight-phantom-cxr model, single image and batch of 8, FLOPs and GFLOP/s; then the same
# architecture and weights in PyTorch (CPU, 2 threads) on the same machine, and the ratios.
# Then torchvision's DenseNet-121 (1 channel) and ResNet-50 at 224², seeded random weights
# exported from PyTorch and imported into radsight: single image, forward and forward +
# Grad-CAM, both sides in one run.
#
#   bench/vision.sh [ITERATIONS]        (default 50; the 224² networks use ITERATIONS / 2)
#
# PyTorch is bench-only: it comes from the test venv (.venv-test, see scripts/test.sh's
# ensure_torch) when that has it, else from its own venv ($VISION_VENV, default
# /work/targets/vision/torch-venv), from the PyTorch CPU index, falling back to PyPI. If neither
# works the Rust half still runs and the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
ITERS="${1:-50}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/targets/vision}"
VENV="${VISION_VENV:-/work/targets/vision/torch-venv}"
if [ -z "${VISION_VENV:-}" ] && .venv-test/bin/python -c 'import torch, torchvision' 2>/dev/null; then
  VENV=.venv-test
fi
MODEL=models/radsight-phantom-cxr
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "date: $(date -u +%FT%TZ)"
echo "commit: $(git rev-parse --short HEAD)"
echo "machine: $(nproc) cores (shared, noisy), $(free -g | awk '/Mem:/{print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average $(cut -d' ' -f1-3 /proc/loadavg)"

cargo build -q --release -p radsight-vision --example bench --example bench_imported
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

echo "--- imported torchvision networks at 224x224 (single image, 2 threads)"
ITERS2=$(( (ITERS + 1) / 2 ))
for arch in densenet121 resnet50; do
  "$VENV/bin/python" bench/vision_torch.py --torchvision "$arch" "$WORK/$arch" "$ITERS2" > "$WORK/$arch.torch.txt"
  "$CARGO_TARGET_DIR/release/examples/bench_imported" "$WORK/$arch/weights.safetensors" "$WORK/$arch/description.toml" "$ITERS2" > "$WORK/$arch.rust.txt"
  r_f=$(awk '$1=="forward_b1_ms"{print $2}' "$WORK/$arch.rust.txt"); t_f=$(awk '$1=="forward_b1_ms"{print $2}' "$WORK/$arch.torch.txt")
  r_g=$(awk '$1=="gradcam_b1_ms"{print $2}' "$WORK/$arch.rust.txt"); t_g=$(awk '$1=="gradcam_b1_ms"{print $2}' "$WORK/$arch.torch.txt")
  awk -v a="$arch" -v rf="$r_f" -v tf="$t_f" -v rg="$r_g" -v tg="$t_g" 'BEGIN{printf "%s forward rust %.1f ms torch %.1f ms ratio %.2f | forward+gradcam rust %.1f ms (%.2fx forward) torch %.1f ms (%.2fx forward)\n", a, rf, tf, rf/tf, rg, rg/rf, tg, tg/tf}'
done
