#!/usr/bin/env python3
"""Reference fixture for radsight-dicom's decoder tests: pydicom decodes its own test files.

Usage: dicom_fixture.py OUT_DIR

For every DICOM file listed in CASES below, found in the installed pydicom wheel's
`pydicom/data/test_files`, this writes into OUT_DIR:

- `<name>`                     a copy of the file (the Rust tests decode this copy);
- `<name>.modality.f32`       (decodable files) little-endian f32, frames x rows x cols: pydicom's
                               `pixel_array` after `apply_modality_lut`; for RGB images the
                               Rec. 601 luma 0.299 R + 0.587 G + 0.114 B of pydicom's RGB array,
                               for YBR images pydicom's Y (decoded with as_rgb=False);
- `<name>.voi.f32`            (grey files with a window in the file) pydicom's `apply_voi_lut`
                               (first window) rescaled from pydicom's output range to [0, 1];
- `resize.json`               Pillow's BILINEAR resize (mode "F") of a small deterministic image,
                               the reference for radsight-dicom's letterbox resize;
- `manifest.json`             one entry per file: name, what the decoder must do ("ok" or the
                               stable error code), shape, transfer syntax, the two arrays above,
                               and for grey files without a window numpy's 0.5/99.5 percentiles
                               of the middle frame.

Two files are made here, not shipped by pydicom: `gray_jpeg_baseline.dcm` (8-bit grey JPEG
baseline, encoded by Pillow from CT_small) and `gray_jpeg_extended8.dcm` (the same 8-bit stream
labelled JPEG Extended, which is legal for 8-bit process 2), because pydicom ships no 8-bit grey
JPEG. Their expected values are pydicom's decoding (through Pillow) of those files.

The Rust tests run this script at test time through RADSIGHT_TEST_PYTHON (scripts/test.sh sets it
to the test venv built from tests/python/requirements.txt).
"""

import io
import json
import os
import shutil
import sys
import warnings

import numpy as np
import pydicom
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.uid import JPEGBaseline8Bit, JPEGExtended12Bit

warnings.simplefilter("ignore")

# name -> expected outcome ("ok" or the decoder's stable error code)
CASES = {
    # native grey, every uncompressed transfer syntax
    "CT_small.dcm": "ok",
    "MR_small.dcm": "ok",
    "MR_small_implicit.dcm": "ok",
    "MR_small_bigendian.dcm": "ok",
    "MR_small_expb.dcm": "ok",
    "MR_small_padded.dcm": "ok",
    "image_dfl.dcm": "ok",
    "examples_overlay.dcm": "ok",  # BitsStored 12 in 16, two windows
    "liver_1frame.dcm": "ok",  # BitsAllocated 1
    "liver_expb_1frame.dcm": "ok",
    "rtdose.dcm": "ok",  # 32-bit, 15 frames
    "rtdose_expb.dcm": "ok",
    # RLE
    "MR_small_RLE.dcm": "ok",
    "rtdose_rle.dcm": "ok",
    "SC_rgb_rle.dcm": "ok",
    "SC_rgb_rle_2frame.dcm": "ok",
    "SC_rgb_rle_16bit.dcm": "ok",
    # native colour (converted to luma)
    "SC_rgb_small_odd.dcm": "ok",
    "SC_rgb_small_odd_big_endian.dcm": "ok",
    "ExplVR_BigEnd.dcm": "ok",
    "examples_rgb_color.dcm": "ok",
    "SC_ybr_full_422_uncompressed.dcm": "ok",
    # JPEG baseline (8-bit), colour
    "SC_rgb_jpeg_dcmtk.dcm": "ok",
    "SC_rgb_dcmtk_+eb+cy+n1.dcm": "ok",
    "SC_rgb_dcmtk_+eb+cy+np.dcm": "ok",
    "SC_jpeg_no_color_transform.dcm": "ok",
    "SC_rgb_small_odd_jpeg.dcm": "ok",
    "examples_ybr_color.dcm": "ok",  # 30 frames
    # generated below: 8-bit grey JPEG baseline / extended
    "gray_jpeg_baseline.dcm": "ok",
    "gray_jpeg_extended8.dcm": "ok",
    # generated below: VOI LUT Sequence, Presentation LUT Shape INVERSE
    "voi_lut_mr.dcm": "ok",
    "inverse_mr.dcm": "ok",
    # JPEG Lossless SV1 (RGB, gdcm)
    "SC_rgb_jpeg_gdcm.dcm": "ok",
    # JPEG 2000 lossless and lossy, signed and unsigned, grey and YBR_RCT/RGB colour
    "693_J2KI.dcm": "ok",  # lossy, 14 of 16 bits, signed
    "GDCMJ2K_TextGBR.dcm": "ok",  # YBR_RCT
    "J2K_pixelrep_mismatch.dcm": "ok",  # header says signed, codestream unsigned
    "JPEG2000.dcm": "ok",  # lossy, 16-bit signed
    "MR_small_jp2klossless.dcm": "ok",
    "SC_rgb_gdcm_KY.dcm": "ok",  # lossy RGB
    "examples_jpeg2k.dcm": "ok",  # YBR_RCT
    # JPEG-LS lossless and near-lossless, 8 and 16 bits, line-interleaved RGB
    "MR_small_jpeg_ls_lossless.dcm": "ok",
    "JPEGLSNearLossless_08.dcm": "ok",
    "JPEGLSNearLossless_16.dcm": "ok",
    "SC_rgb_jls_lossy_line.dcm": "ok",
    "SC_rgb_jls_lossy_sample.dcm": "ok",
    # refused with a clear error
    "JPGExtended.dcm": "ok",  # 12-bit JPEG extended
    # 12-bit JPEG extended that pylibjpeg-libjpeg refuses ("Invalid SOS parameters" in DCMTK's
    # words, which decodes it anyway): the reference is DCMTK's dcmdjpeg (REFERENCE_BY_DCMTK).
    "JPEG-lossy.dcm": "ok",
    "examples_palette.dcm": "dicom-unsupported-image",
    "MR_truncated.dcm": "dicom-corrupt",
    "badVR.dcm": "dicom-corrupt",  # NumberOfFrames "1A"
    "rtplan.dcm": "dicom-not-image",
}


def test_files_dir():
    return os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")


def write_gray_jpegs(src_dir, out_dir):
    """8-bit grey JPEG baseline and the same stream labelled JPEG extended."""
    from PIL import Image

    ds = pydicom.dcmread(os.path.join(src_dir, "CT_small.dcm"))
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    lo, hi = np.percentile(hu, [0.5, 99.5])
    img8 = np.clip((hu - lo) / (hi - lo) * 255.0, 0, 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img8, mode="L").save(buf, format="JPEG", quality=90)
    jpeg = buf.getvalue()
    for name, uid in [
        ("gray_jpeg_baseline.dcm", JPEGBaseline8Bit),
        ("gray_jpeg_extended8.dcm", JPEGExtended12Bit),
    ]:
        out = pydicom.dcmread(os.path.join(src_dir, "CT_small.dcm"))
        out.file_meta.TransferSyntaxUID = uid
        out.BitsAllocated = 8
        out.BitsStored = 8
        out.HighBit = 7
        out.PixelRepresentation = 0
        out.SamplesPerPixel = 1
        out.PhotometricInterpretation = "MONOCHROME2"
        for kw in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
            if kw in out:
                delattr(out, kw)
        out.PixelData = encapsulate([jpeg])
        out["PixelData"].VR = "OB"
        out.save_as(os.path.join(out_dir, name), enforce_file_format=True)


def write_voi_lut_and_inverse(src_dir, out_dir):
    """MR_small with a VOI LUT Sequence (a square-root curve, 12-bit output, no window), and
    MR_small with Presentation LUT Shape INVERSE (pydicom ships neither)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(os.path.join(src_dir, "MR_small.dcm"))
    for kw in ("WindowCenter", "WindowWidth"):
        if kw in ds:
            delattr(ds, kw)
    item = Dataset()
    count = 2048
    item.LUTDescriptor = [count, 0, 12]
    item.LUTData = [int(round(4095 * (i / (count - 1)) ** 0.5)) for i in range(count)]
    item["LUTData"].VR = "US"
    item.LUTExplanation = "square root"
    ds.VOILUTSequence = Sequence([item])
    ds.save_as(os.path.join(out_dir, "voi_lut_mr.dcm"), enforce_file_format=True)

    ds = pydicom.dcmread(os.path.join(src_dir, "MR_small.dcm"))
    ds.PresentationLUTShape = "INVERSE"
    ds.save_as(os.path.join(out_dir, "inverse_mr.dcm"), enforce_file_format=True)


def luma(rgb):
    rgb = rgb.astype(np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def voi_range(ds):
    """pydicom's apply_windowing output range (pydicom/pixels/processing.py)."""
    bits = int(ds.BitsStored)
    if ds.PixelRepresentation == 0:
        y_min, y_max = 0.0, 2.0**bits - 1
    else:
        y_min, y_max = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        y_min = y_min * float(slope) + float(intercept)
        y_max = y_max * float(slope) + float(intercept)
    return y_min, y_max


def write_resize_reference(out_dir):
    from PIL import Image

    w, h = 13, 7
    src = [float((x * 7 + y * 13) % 17) / 16.0 + (x == 3) for y in range(h) for x in range(w)]
    img = Image.new("F", (w, h))
    img.putdata(src)
    cases = []
    for tw, th in [(5, 3), (4, 4), (26, 14), (31, 9), (13, 7)]:
        out = img.resize((tw, th), Image.BILINEAR)
        cases.append({"width": tw, "height": th, "data": list(out.getdata())})
    with open(os.path.join(out_dir, "resize.json"), "w") as f:
        json.dump({"width": w, "height": h, "data": src, "cases": cases}, f)


LOSSY = {
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.203",
}


# Files pydicom + pylibjpeg cannot decode: their reference is DCMTK's decompression (dcmdjpeg),
# read by pydicom.
REFERENCE_BY_DCMTK = {"JPEG-lossy.dcm"}


def reference_entry(name, dst, expect):
    """The manifest entry for the file `dst`: pydicom's decoding written beside it."""
    entry = {"name": name, "expect": expect}
    if expect != "ok":
        return entry
    ds = pydicom.dcmread(dst)
    if name in REFERENCE_BY_DCMTK:
        import subprocess

        plain = dst + ".dcmdjpeg.dcm"
        subprocess.run(["dcmdjpeg", dst, plain], check=True, capture_output=True)
        arr = pydicom.dcmread(plain).pixel_array
        dst_for_ybr = plain
    else:
        arr = ds.pixel_array
        dst_for_ybr = dst
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    colour = int(ds.SamplesPerPixel) == 3
    photometric = str(ds.PhotometricInterpretation)
    ts = str(ds.file_meta.TransferSyntaxUID)
    if colour and photometric in ("YBR_FULL", "YBR_FULL_422"):
        # radsight's luma of YBR data is Y itself; pydicom's Y, without its YBR->RGB.
        values = pixel_array(dst_for_ybr, as_rgb=False)[..., 0].astype(np.float64)
    elif colour:
        # RGB, and JPEG 2000 YBR_ICT/YBR_RCT (the codec inverts the transform to RGB).
        values = luma(arr)
    else:
        values = apply_modality_lut(arr, ds).astype(np.float64)
    values = values.reshape(frames, int(ds.Rows), int(ds.Columns))
    values.astype("<f4").tofile(dst + ".modality.f32")
    entry.update(
        transfer_syntax=ts,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        frames=frames,
        photometric=photometric,
        colour=colour,
        modality=name + ".modality.f32",
    )
    if ts in LOSSY:
        # Issue 11: within 1 grey level at 8 bits, 0.1 % of the range at 12 to 16 bits (in
        # modality units, so times the rescale slope).
        bits = int(ds.BitsStored)
        slope = abs(float(ds.get("RescaleSlope", 1) or 1)) if not colour else 1.0
        entry["tolerance"] = max(1.0, 0.001 * 2.0**bits) * slope
    has_lut = "VOILUTSequence" in ds
    has_window = ("WindowCenter" in ds and "WindowWidth" in ds) or has_lut
    if not colour and not has_window:
        # radsight's default window: numpy's 0.5 and 99.5 percentiles of the middle frame.
        entry["percentiles"] = [float(x) for x in np.percentile(values[frames // 2], [0.5, 99.5])]
    if not colour and has_window:
        # pydicom prefers the VOI LUT Sequence to the window, as radsight does.
        voi = apply_voi_lut(apply_modality_lut(arr, ds), ds, index=0).astype(np.float64)
        if has_lut:
            y_min, y_max = 0.0, 2.0 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1
            entry["voi_lut"] = True
        else:
            y_min, y_max = voi_range(ds)
        voi = ((voi - y_min) / (y_max - y_min)).reshape(frames, int(ds.Rows), int(ds.Columns))
        if ds.get("PresentationLUTShape") == "INVERSE":
            # pydicom leaves the Presentation LUT to the caller; radsight inverts the output.
            voi = 1.0 - voi
        voi.astype("<f4").tofile(dst + ".voi.f32")
        entry["voi"] = name + ".voi.f32"
    return entry


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: dicom_fixture.py OUT_DIR")
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    src_dir = test_files_dir()
    write_gray_jpegs(src_dir, out_dir)
    write_voi_lut_and_inverse(src_dir, out_dir)
    write_resize_reference(out_dir)
    manifest = {"pydicom": pydicom.__version__, "files": []}
    for name, expect in CASES.items():
        src = os.path.join(src_dir, name)
        dst = os.path.join(out_dir, name)
        if not os.path.exists(dst):
            if not os.path.exists(src):
                sys.exit(f"pydicom {pydicom.__version__} does not ship {name} (looked in {src_dir})")
            shutil.copyfile(src, dst)
        manifest["files"].append(reference_entry(name, dst, expect))
    # The transcoded corpus (dcmtk, gdcm): see dicom_corpus.py.
    import dicom_corpus

    for name, expect in dicom_corpus.generate(src_dir, out_dir):
        manifest["files"].append(reference_entry(name, os.path.join(out_dir, name), expect))
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
