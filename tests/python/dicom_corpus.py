#!/usr/bin/env python3
"""Transcoded test corpus for radsight-dicom: every compressed transfer syntax a PACS sends,
made at test time by DCMTK and GDCM (Debian `dcmtk`, `libgdcm-tools`) from five sources.

Usage: dicom_corpus.py OUT_DIR   (or `generate(src_dir, out_dir)` from dicom_fixture.py, which
                                  writes pydicom's reference decoding of each file beside it)

Sources (written into OUT_DIR as Explicit VR Little Endian, `corpus_<source>.dcm`):
- `ct16s`: pydicom's CT_small (16-bit signed CT, 128x128);
- `mr`:    pydicom's MR_small (16-bit signed MR, 64x64);
- `ct12`:  CT_small as a 12-bit unsigned CT (HU + 1024, intercept -1024), the common archive form;
- `mr3`:   a three-frame 12-bit MR built from MR_small (multi-frame objects);
- `rgb`:   pydicom's SC_rgb_rle decompressed (8-bit RGB, 100x100);
- `dx`:    a synthetic 2048x2500 12-bit radiograph (smooth anatomy-like structures and noise,
           deterministic).

Each source is transcoded into every syntax its bit depth allows (`corpus_<source>_<syntax>.dcm`):
RLE (dcmcrle), JPEG Lossless SV1 (dcmcjpeg +e1; for `dx` also in fragments of at most 64 KiB,
+fs 64) and Process 14 with predictor 6 (+el), JPEG Extended 12-bit (+ee, 12-bit sources) or
baseline (+eb, 8-bit), JPEG-LS lossless and near-lossless NEAR=2 (dcmcjpls +el / +en), JPEG 2000
lossless and lossy (gdcmconv --j2k; --j2k --lossy --irreversible -r 10: 9-7 wavelet, ratio 10). A missing tool or a failed transcode
is an error: nothing is skipped.
"""

import os
import subprocess
import sys

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian

# What radsight-dicom does with each transfer syntax: "ok" (compared with pydicom) or the stable
# error code it must give.
EXPECT = {
    "1.2.840.10008.1.2.5": "ok",
    "1.2.840.10008.1.2.4.50": "ok",
    "1.2.840.10008.1.2.4.51": "ok",
    "1.2.840.10008.1.2.4.57": "ok",
    "1.2.840.10008.1.2.4.70": "ok",
    "1.2.840.10008.1.2.4.80": "ok",
    "1.2.840.10008.1.2.4.81": "ok",
    "1.2.840.10008.1.2.4.90": "ok",
    "1.2.840.10008.1.2.4.91": "ok",
}

# syntax name -> (command line before IN OUT, applies to: "all", "12", "8", "unsigned" (12 or 8))
TRANSCODES = {
    "rle": (["dcmcrle"], "all"),
    "sv1": (["dcmcjpeg", "+e1"], "all"),
    "p14": (["dcmcjpeg", "+el", "+sv", "6"], "all"),
    "ext12": (["dcmcjpeg", "+ee", "+q", "90"], "12"),
    "baseline": (["dcmcjpeg", "+eb", "+q", "90"], "8"),
    "jls": (["dcmcjpls", "+el"], "all"),
    # DCMTK refuses near-lossless JPEG-LS for signed pixels.
    "jlsnear": (["dcmcjpls", "+en", "+md", "2"], "unsigned"),
    "j2k": (["gdcmconv", "--j2k"], "all"),
    "j2klossy": (["gdcmconv", "--j2k", "--lossy", "--irreversible", "-r", "10"], "all"),
}


def native(ds, arr, out, bits_stored=None, signed=None):
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if bits_stored is not None:
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
    if signed is not None:
        ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = arr.tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
    ds.save_as(out, enforce_file_format=True)


def make_sources(src_dir, out_dir):
    """name -> (path, bits class "12", "8" or "16")."""
    sources = {}
    ct = pydicom.dcmread(os.path.join(src_dir, "CT_small.dcm"))
    path = os.path.join(out_dir, "corpus_ct16s.dcm")
    native(ct, ct.pixel_array.astype("<i2"), path)
    sources["ct16s"] = (path, "16")

    mr = pydicom.dcmread(os.path.join(src_dir, "MR_small.dcm"))
    path = os.path.join(out_dir, "corpus_mr.dcm")
    native(mr, mr.pixel_array.astype("<i2"), path)
    sources["mr"] = (path, "16")

    ct = pydicom.dcmread(os.path.join(src_dir, "CT_small.dcm"))
    hu = ct.pixel_array.astype(np.int32) * int(ct.RescaleSlope) + int(ct.RescaleIntercept)
    ct.RescaleSlope, ct.RescaleIntercept = 1, -1024
    path = os.path.join(out_dir, "corpus_ct12.dcm")
    native(ct, np.clip(hu + 1024, 0, 4095).astype("<u2"), path, bits_stored=12, signed=False)
    sources["ct12"] = (path, "12")

    mr = pydicom.dcmread(os.path.join(src_dir, "MR_small.dcm"))
    base = np.clip(mr.pixel_array.astype(np.int32), 0, 4095)
    stack = np.stack([base, np.clip(base * 2, 0, 4095), 4095 - base]).astype("<u2")
    mr.NumberOfFrames = 3
    path = os.path.join(out_dir, "corpus_mr3.dcm")
    native(mr, stack, path, bits_stored=12, signed=False)
    sources["mr3"] = (path, "12")

    rgb = pydicom.dcmread(os.path.join(src_dir, "SC_rgb_rle.dcm"))
    arr = rgb.pixel_array
    rgb.PlanarConfiguration = 0
    path = os.path.join(out_dir, "corpus_rgb.dcm")
    native(rgb, np.ascontiguousarray(arr).astype(np.uint8), path)
    sources["rgb"] = (path, "8")

    path = os.path.join(out_dir, "corpus_dx.dcm")
    write_radiograph(path)
    sources["dx"] = (path, "12")
    return sources


def write_radiograph(path, rows=2500, columns=2048):
    """A deterministic 12-bit chest-radiograph-like image: two lung fields, ribs, a spine, noise."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    y, x = np.mgrid[0:rows, 0:columns].astype(np.float32)
    yn, xn = y / rows, x / columns
    img = 2600.0 - 900.0 * np.exp(-(((xn - 0.3) / 0.16) ** 2 + ((yn - 0.5) / 0.3) ** 2))
    img -= 900.0 * np.exp(-(((xn - 0.7) / 0.16) ** 2 + ((yn - 0.5) / 0.3) ** 2))
    img += 700.0 * np.exp(-(((xn - 0.5) / 0.05) ** 2))
    img += 250.0 * (np.sin(yn * 60.0 + 8.0 * np.abs(xn - 0.5)) > 0.6)
    rng = np.random.default_rng(11)
    img += rng.normal(0.0, 12.0, size=img.shape)
    arr = np.clip(img, 0, 4095).astype("<u2")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["radsight-dx"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["radsight-dx-study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["radsight-dx-series"])
    ds.Modality = "DX"
    ds.PatientID = "SYNTHETIC"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelData = arr.tobytes()
    ds["PixelData"].VR = "OW"
    ds.save_as(path, enforce_file_format=True)


def run(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        sys.exit(f"{cmd[0]} is not installed (Debian dcmtk / libgdcm-tools; scripts/test.sh installs them)")
    if out.returncode != 0 or not os.path.exists(cmd[-1]):
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")


def generate(src_dir, out_dir):
    """Writes the corpus; returns [(file name, expected outcome)]."""
    entries = []
    for name, (path, bits) in make_sources(src_dir, out_dir).items():
        entries.append((os.path.basename(path), "ok"))
        for syntax, (cmd, applies) in TRANSCODES.items():
            if applies not in ("all", bits) and not (applies == "unsigned" and bits != "16"):
                continue
            variants = [("", [])]
            if name == "dx" and syntax == "sv1":
                variants.append(("_frag", ["+fs", "64"]))
            for suffix, extra in variants:
                out_name = f"corpus_{name}_{syntax}{suffix}.dcm"
                out = os.path.join(out_dir, out_name)
                run(cmd[:1] + extra + cmd[1:] + [path, out])
                ts = str(pydicom.dcmread(out, stop_before_pixels=True).file_meta.TransferSyntaxUID)
                if ts not in EXPECT:
                    sys.exit(f"{out_name}: unexpected transfer syntax {ts}")
                entries.append((out_name, EXPECT[ts]))
    return entries


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: dicom_corpus.py OUT_DIR")
    os.makedirs(sys.argv[1], exist_ok=True)
    src = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
    for entry in generate(src, sys.argv[1]):
        print(*entry)
