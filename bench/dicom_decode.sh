#!/usr/bin/env bash
# DICOM decode benchmark: radsight-dicom (release) against pydicom 3 on the same files, same run.
# Not a test. The files are every file the decoder tests compare with pydicom: pydicom's test
# files that radsight-dicom decodes, the generated 8-bit grey JPEGs, and the DCMTK/GDCM corpus
# in every syntax (tests/python/dicom_fixture.py + dicom_corpus.py, into a temp dir; needs
# dcmtk and libgdcm-tools). pydicom uses the pylibjpeg plugins of the test venv.
#
#   bench/dicom_decode.sh            # N=100 decodes per file (files over 1 MB: N/20, at least 3)
#   BENCH_N=20 bench/dicom_decode.sh
#
# Then the peak RSS of one decode of the 2048x2500 12-bit radiograph in JPEG 2000 lossless
# (corpus_dx_j2k.dcm), in a fresh process each: radsight-dicom and pydicom + pylibjpeg-openjpeg.
#
# Needs the test venv (.venv-test, see scripts/test.sh). Prints a markdown table: per-file mean
# time of radsight decode (decode + modality LUT + window choice), of radsight decode + window +
# letterbox to 128, of pydicom (dcmread + pixel_array + apply_modality_lut), and the ratios
# pydicom / radsight decode of the means and of the minimums (the minimums are steadier on a
# shared machine).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${BENCH_N:-100}"
PY="${RADSIGHT_TEST_PYTHON:-$PWD/.venv-test/bin/python}"
[ -x "$PY" ] || { echo "no test venv python at $PY (run scripts/test.sh or set RADSIGHT_TEST_PYTHON)" >&2; exit 1; }

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
"$PY" tests/python/dicom_fixture.py "$OUT/fx"
mapfile -t FILES < <("$PY" -c '
import json, sys
m = json.load(open(sys.argv[1] + "/manifest.json"))
for e in m["files"]:
    if e["expect"] == "ok":
        print(sys.argv[1] + "/" + e["name"])
' "$OUT/fx")

cargo build -q --release -p radsight-dicom --example decode_bench
BIN="${CARGO_TARGET_DIR:-target}/release/examples/decode_bench"
"$BIN" "$N" "${FILES[@]}" > "$OUT/rust.tsv"
"$PY" bench/dicom_decode.py "$N" "${FILES[@]}" > "$OUT/py.tsv"

"$PY" - "$OUT/fx" "$OUT/rust.tsv" "$OUT/py.tsv" "$N" <<'PY'
import json, os, sys
fx, rust_path, py_path, n = sys.argv[1:5]
m = {e["name"]: e for e in json.load(open(fx + "/manifest.json"))["files"]}
rows = lambda p: {l.split("\t")[0]: [float(x) for x in l.split("\t")[1:]] for l in open(p) if l.strip()}
rust, py = rows(rust_path), rows(py_path)
ts_names = {"1.2.840.10008.1.2": "implicit LE", "1.2.840.10008.1.2.1": "explicit LE",
            "1.2.840.10008.1.2.2": "explicit BE", "1.2.840.10008.1.2.1.99": "deflated",
            "1.2.840.10008.1.2.5": "RLE", "1.2.840.10008.1.2.4.50": "JPEG baseline",
            "1.2.840.10008.1.2.4.51": "JPEG extended", "1.2.840.10008.1.2.4.57": "JPEG lossless P14",
            "1.2.840.10008.1.2.4.70": "JPEG lossless SV1", "1.2.840.10008.1.2.4.80": "JPEG-LS lossless",
            "1.2.840.10008.1.2.4.81": "JPEG-LS near-lossless", "1.2.840.10008.1.2.4.90": "J2K lossless",
            "1.2.840.10008.1.2.4.91": "J2K lossy"}
print(f"N = {n} decodes per file (over 1 MB: N/20, at least 3), mean (min) in ms\n")
print("| file | syntax | frames×rows×cols | radsight decode | radsight + window + letterbox 128 | pydicom | pydicom / radsight, means | mins |")
print("|---|---|---|---|---|---|---|---|")
ratios, min_ratios = [], []
for name, (pm, pmin) in py.items():
    e = m[name]; rm, rmin = rust[name]; lm, lmin = rust[name + "+letterbox"]
    ratios.append(pm / rm)
    min_ratios.append(pmin / rmin)
    shape = f'{e["frames"]}×{e["rows"]}×{e["columns"]}'
    print(f"| {name} | {ts_names.get(e['transfer_syntax'], e['transfer_syntax'])} | {shape} | {rm:.3f} ({rmin:.3f}) | {lm:.3f} ({lmin:.3f}) | {pm:.3f} ({pmin:.3f}) | {pm / rm:.1f} | {pmin / rmin:.1f} |")
for label, r in (("means", ratios), ("mins", min_ratios)):
    r.sort()
    print(f"\nMedian ratio pydicom / radsight ({label}): {r[len(r) // 2]:.1f} (lowest {r[0]:.1f}, highest {r[-1]:.1f})")
slower = [k for k, (pm, pmin) in py.items() if pmin < rust[k][1]]
print(f"\nFiles where radsight's minimum is slower than pydicom's: {', '.join(slower) or 'none'}")
PY

DX="$OUT/fx/corpus_dx_j2k.dcm"
echo
echo "Peak RSS of one decode of corpus_dx_j2k.dcm (2048x2500, 16-bit, decoded size 10,240,000 bytes):"
echo "- radsight-dicom: $("$BIN" peak "$DX") kB"
echo "- pydicom + pylibjpeg-openjpeg: $("$PY" bench/dicom_decode.py peak "$DX") kB"
