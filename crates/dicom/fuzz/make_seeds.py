#!/usr/bin/env python3
"""Regenerates the fuzz seed corpus (corpus/decode/): tiny synthetic images (16x16 12-bit and
8-bit grey, 16x16 RGB), in every transfer syntax of tests/python/dicom_corpus.py (DCMTK, GDCM)
and deflated. Run from the repository root with the test venv:

    .venv-test/bin/python crates/dicom/fuzz/make_seeds.py crates/dicom/fuzz/corpus/decode
"""
import os, subprocess, sys, numpy as np
sys.path.insert(0, "tests/python")
import dicom_corpus
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid, DeflatedExplicitVRLittleEndian
import pydicom
out = sys.argv[1]
def make(path, rows, cols, bits, spp=1):
    meta = FileMetaDataset(); meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"; meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset(); ds.file_meta = meta; ds.SOPClassUID = SecondaryCaptureImageStorage; ds.SOPInstanceUID = "1.2.3.4"
    ds.Rows, ds.Columns = rows, cols; ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = "MONOCHROME2" if spp == 1 else "RGB"
    if spp == 3: ds.PlanarConfiguration = 0
    alloc = 16 if bits > 8 else 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = alloc, bits, bits - 1, 0
    y, x = np.mgrid[0:rows, 0:cols]
    a = ((x * 37 + y * 11) % (1 << bits)).astype("<u2" if alloc == 16 else np.uint8)
    if spp == 3: a = np.stack([a, a[::-1], a.T[:rows,:cols]], -1)
    ds.PixelData = a.tobytes(); ds["PixelData"].VR = "OW" if alloc == 16 else "OB"
    ds.save_as(path, enforce_file_format=True)
make(f"{out}/native12.dcm", 16, 16, 12)
make(f"{out}/native8.dcm", 16, 16, 8)
make(f"{out}/rgb8.dcm", 16, 16, 8, 3)
for src in ["native12", "native8", "rgb8"]:
    for syntax, (cmd, applies) in dicom_corpus.TRANSCODES.items():
        bits = {"native12": "12", "native8": "8", "rgb8": "8"}[src]
        if applies not in ("all", bits) and not (applies == "unsigned" and bits != "16"): continue
        subprocess.run(cmd + [f"{out}/{src}.dcm", f"{out}/{src}_{syntax}.dcm"], check=True, capture_output=True)
ds = pydicom.dcmread(f"{out}/native8.dcm"); ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
ds.save_as(f"{out}/native8_deflate.dcm", enforce_file_format=True)
