#!/usr/bin/env python3
"""Times pydicom on the files of bench/dicom_decode.sh: read from memory, pixel_array, modality LUT.

Usage: dicom_decode.py N FILE...   prints `name<TAB>mean_ms<TAB>min_ms` per file (one warm-up;
files over 1 MB: N / 20 runs, at least 3, as the Rust side does).
pydicom decodes the compressed syntaxes with the pylibjpeg plugins (pylibjpeg-libjpeg for JPEG
Lossless, 12-bit JPEG and JPEG-LS; pylibjpeg-openjpeg for JPEG 2000) and Pillow for 8-bit JPEG.
`dicom_decode.py peak FILE` decodes FILE once and prints the peak RSS (ru_maxrss, kB).
For YBR files pydicom also converts to RGB (its default), which radsight does not do (it takes Y).
"""

import io
import os
import sys
import time
import warnings

import pydicom
from pydicom.pixels import apply_modality_lut

warnings.simplefilter("ignore")


def decode(data):
    ds = pydicom.dcmread(io.BytesIO(data))
    return apply_modality_lut(ds.pixel_array, ds)


def main():
    if sys.argv[1] == "peak":
        import resource

        with open(sys.argv[2], "rb") as f:
            decode(f.read())
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        return
    n_all = int(sys.argv[1])
    for path in sys.argv[2:]:
        with open(path, "rb") as f:
            data = f.read()
        n = max(3, n_all // 20) if len(data) > 1 << 20 else n_all
        try:
            decode(data)
        except Exception as e:  # pydicom + pylibjpeg cannot decode it: no comparison
            print(f"pydicom cannot decode {os.path.basename(path)}: {e}".splitlines()[0], file=sys.stderr)
            continue
        times = []
        for _ in range(n):
            t = time.perf_counter()
            decode(data)
            times.append((time.perf_counter() - t) * 1e3)
        print(f"{os.path.basename(path)}\t{sum(times) / n:.4f}\t{min(times):.4f}")


if __name__ == "__main__":
    main()
