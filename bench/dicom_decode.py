#!/usr/bin/env python3
"""Times pydicom on the files of bench/dicom_decode.sh: read from memory, pixel_array, modality LUT.

Usage: dicom_decode.py N FILE...   prints `name<TAB>mean_ms<TAB>min_ms` per file (one warm-up).
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
    n = int(sys.argv[1])
    for path in sys.argv[2:]:
        with open(path, "rb") as f:
            data = f.read()
        decode(data)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            decode(data)
            times.append((time.perf_counter() - t) * 1e3)
        print(f"{os.path.basename(path)}\t{sum(times) / n:.4f}\t{min(times):.4f}")


if __name__ == "__main__":
    main()
