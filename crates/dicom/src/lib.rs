//! radsight-dicom: DICOM Part 10 bytes (as WADO-RS returns them) to a windowed, normalised,
//! single-channel f32 image for a model, and the letterbox geometry to map model outputs back.
//!
//! # Pipeline
//! [`decode`] parses the object, checks the header against [`DecodeLimits`] before any pixel is
//! allocated, unpacks every frame's stored samples (mask to BitsStored, sign-extend when
//! PixelRepresentation is 1), applies the modality LUT (RescaleSlope/RescaleIntercept; for
//! enhanced multi-frame objects from the shared functional groups, or per frame from the per-frame
//! ones) and picks a VOI [`Window`].
//! [`DecodedImage::normalised_frame`] applies the file's VOI LUT Sequence (first item) when it has
//! one, else that window (first WindowCenter/WindowWidth value of the file with its
//! VOILUTFunction, else a percentile window, 0.5 %–99.5 % of the default frame by default), and
//! inverts MONOCHROME1 or Presentation LUT Shape INVERSE, giving [0, 1]. [`letterbox`] resizes to an N×N model input.
//!
//! # Supported
//! | Transfer syntax | How |
//! |---|---|
//! | Implicit VR LE, Explicit VR LE, Explicit VR BE | native, unpacked here |
//! | Deflated Explicit VR LE | inflated here with a cap from the declared image, then native |
//! | RLE Lossless | PS3.5 Annex G, decoded here (8, 16 and 32 bits) |
//! | JPEG Baseline (1.2.840.10008.1.2.4.50), JPEG Extended (…4.51), 8-bit | jpeg-decoder |
//! | JPEG Extended (…4.51), 12-bit (Process 4) | ours (`jpeg12`: sequential Huffman DCT, float IDCT) |
//! | JPEG Lossless Process 14 (…4.57) and SV1 (…4.70), 2–16 bits | jpeg-decoder 0.3 (its lossless path) |
//! | JPEG-LS lossless and near-lossless (…4.80, …4.81), 2–16 bits, all interleave modes | ours (`jpegls`, ITU-T T.87) |
//! | JPEG 2000 lossless and lossy (…4.90, …4.91), 8/16 bits, signed or not, YBR_RCT/ICT | jpeg2k over openjpeg-sys (OpenJPEG 2.5.3, C, bundled) |
//!
//! Multi-frame objects and frames split over several fragments are grouped by the Extended
//! Offset Table, else the Basic Offset Table, else one fragment per frame, else by the fragments
//! that start a codestream (each path has a test). A JPEG 2000 codestream's SIZ segment is checked against the header
//! (size, components, no subsampling, precision, tiles) before OpenJPEG allocates, and a codestream
//! that does not end with its EOC marker is refused as truncated (OpenJPEG's strict mode is not
//! used: in 2.5.3 it decodes pydicom's `GDCMJ2K_TextGBR.dcm` differently from pylibjpeg-openjpeg). JPEG 2000 values are kept as the decoder gives
//! them (not masked to BitsStored, which would wrap lossy overshoot), as pydicom does; an unsigned
//! codestream in a signed object is sign-extended at BitsStored (pydicom's sign correction).
//!
//! 12-bit JPEG is decoded here because jpeg-decoder (the codec of dicom-pixeldata 0.10 too) stops
//! at `unsupported SamplePrecision(12)` and zune-jpeg has no 12-bit path; ours takes sequential
//! frames without subsampling (all grey images), and refuses progressive or subsampled 12-bit.
//!
//! JPEG-LS is decoded here because the maintained decoder, CharLS (C++), comes through
//! `charls-sys`, which needs cmake or a system libcharls for every build of the service; ours
//! matches pydicom + pylibjpeg-libjpeg exactly on every JPEG-LS file of the tests.
//!
//! Refused with a typed error carrying the UID: HTJ2K (…4.201/.202/.203: OpenJPEG 2.5 decodes HT
//! code blocks, but no HTJ2K sample or encoder was at hand to check it against pydicom, so it is
//! not claimed), MPEG/HEVC video, and JPEG-LS mapping tables or point transforms. We never guess
//! pixels.
//!
//! dicom-pixeldata itself is not used: its RLE decoder refuses 32-bit data and indexes unchecked
//! on short segments, and its JPEG path colour-transforms DICOM `RGB` streams that have no Adobe
//! marker (see `codec`). We decode the fragments ourselves with the same codecs.
//!
//! Images: MONOCHROME1/2 with BitsAllocated 1, 8, 16 or 32 (HighBit = BitsStored − 1), and colour
//! (RGB, YBR_FULL, YBR_FULL_422; native or from the codecs), which is **converted to luma**
//! (Rec. 601: 0.299 R + 0.587 G + 0.114 B; for YBR_FULL/YBR_FULL_422, native or JPEG without an
//! Adobe marker, the Y component itself, which is that luma) because the models
//! are grey; colour photographs through a grey model are the caller's decision, made visible by
//! [`DecodedImage::samples_per_pixel`]. PALETTE COLOR, a Modality LUT Sequence and float pixel
//! data are refused. The VOI LUT Sequence (first item, LUT Descriptor and LUT Data) is applied to
//! grey images in place of the window, as pydicom's `apply_voi_lut` prefers it; the file window
//! or VOI LUT of an enhanced object is the first frame's (Frame VOI LUT functional group).
//!
//! Multi-frame: every frame is decoded into [`DecodedImage::modality_values`];
//! [`DecodedImage::default_frame`] is the middle frame (`frames / 2`, frame 0 for one frame), the
//! frame a single-image model sees and the one the percentile window is computed on.
//!
//! # Untrusted input
//! Never panics: header arithmetic is checked or saturating, slices are checked, and the
//! codec calls are wrapped in `catch_unwind` as a last resort. jpeg-decoder and our 12-bit JPEG
//! and JPEG-LS decoders are safe Rust. OpenJPEG is C (bundled by openjpeg-sys, fuzzed upstream
//! by OSS-Fuzz): it reports corrupt codestreams as errors, but a memory bug in it could not be
//! caught by any panic boundary; it runs in-process (not isolated). The pure-Rust openjp2 port
//! was tried first and dropped: our fuzz target found it deallocating a null pointer (undefined
//! behaviour, a process abort under debug assertions) on a corrupt codestream
//! (`fuzz/regressions/openjp2-null-dealloc.dcm`, decoded by the tests).
//! dicom-parser zero-fills an element's declared length (up to 4 GiB) before it reads the
//! value, so a pre-scan (`scan`) first checks every declared element and item length against
//! the input, refuses anything but an item or a delimiter inside a sequence and a delimiter
//! outside one or with a length (dicom-parser reads on and allocates: one changed length byte of
//! pydicom's `ExplVR_BigEnd.dcm` cost 1.4 GB per decode), reads the Transfer Syntax UID itself
//! (dicom-object's meta reader reserves a declared string length first), limits nesting to 32, and notes where the top-level PixelData starts. Only the
//! header before PixelData is parsed by dicom-object; [`DecodeLimits`] and the per-frame pixel
//! budget ([`DecodeOptions::max_pixels_per_frame`], default 64 Mi pixels) are checked on it, and
//! the pixel data is then read in place from the input (native little-endian data is not even
//! copied). A deflated data set is inflated in chunks: at most 64 MiB before PixelData, then
//! only as much as the image it declares needs (its pixel bytes, twice that when encapsulated,
//! plus 1 MiB), and an image over the limits is refused before its pixels are inflated.
//! `catch_unwind` needs the default `panic = "unwind"`; under `panic = "abort"`
//! a codec panic would abort the process.
//!
//! # How it is checked
//! `tests/decode.rs` decodes pydicom's own test files and a corpus transcoded at test time by
//! DCMTK and GDCM (`tests/python/dicom_corpus.py`: CT, 12-bit CT, signed MR, a three-frame MR,
//! RGB and a 2048×2500 12-bit radiograph, into RLE, JPEG Lossless SV1/P14 (also split in 64 KiB
//! fragments), JPEG 12-bit, JPEG-LS and JPEG 2000 lossless/lossy) and compares with pydicom 3 +
//! pylibjpeg's decoding (`tests/python/dicom_fixture.py`): lossless data exactly, 8-bit JPEG within
//! 1 grey level, lossy syntaxes within 1 grey level at 8 bits and 0.1 % of the range above, the file windows and numpy's percentiles to 1e-3; hand-built objects pin the
//! VOI functions, MONOCHROME1, signed and masked samples, multi-frame, limits and errors; the
//! resize is compared with Pillow's BILINEAR; and garbage is written into every small fixture
//! file 60 times to check that decoding returns (an error or an image) quickly and never panics.
//! Memory cases run in a child process that reports its peak RSS (VmHWM), each under 512 MB:
//! all 255 other values of byte 903 of `ExplVR_BigEnd.dcm`, a deflated 16384×16384 image
//! (about 1.2 MB deflated), a deflated object with 1 GiB of zeros before its pixels, and a 1 KB
//! file declaring 2 GB of pixel data.
//!
//! `fuzz/` is a cargo-fuzz target for [`decode`] (`cargo +nightly fuzz run decode`, its own
//! workspace) with a seed corpus of tiny images in every syntax; every input it crashed on is in
//! `fuzz/regressions/` and decoded by `tests/decode.rs`.

mod codec;
mod decode;
mod error;
mod image;
mod jpeg12;
mod jpegls;
mod scan;
mod voi;

pub use decode::{
    DecodeLimits, DecodeOptions, DecodedImage, PixelSpacing, SUPPORTED_TRANSFER_SYNTAXES, SpacingSource, declared_image, decode,
    decode_with,
};
pub use error::DecodeError;
pub use image::{GrayImage, Letterbox, MapSizeMismatch, PixelBox, letterbox};
pub use scan::DeclaredImage;
pub use voi::{Percentiles, VoiFunction, VoiLut, Window, WindowSource};

impl DecodedImage {
    /// The frame a single-image consumer should use: the middle one (`frames / 2`).
    pub fn default_frame(&self) -> u32 {
        self.frames / 2
    }

    /// One frame's modality values (rows × columns), `None` when `frame >= frames`.
    pub fn frame_values(&self, frame: u32) -> Option<&[f32]> {
        let n = self.rows as usize * self.columns as usize;
        let start = (frame as usize).checked_mul(n)?;
        if frame >= self.frames {
            return None;
        }
        self.modality_values.get(start..start.checked_add(n)?)
    }

    /// `frame` after the file's VOI LUT ([`DecodedImage::voi_lut`]) when it has one, else
    /// [`DecodedImage::window`], then inverted when [`DecodedImage::inverted`], in [0, 1].
    pub fn normalised_frame(&self, frame: u32) -> Option<GrayImage> {
        match &self.voi_lut {
            Some(lut) => self.map_frame(frame, |v| lut.apply(v)),
            None => self.normalise_frame(frame, &self.window),
        }
    }

    /// `frame` after `window`, then inverted when [`DecodedImage::inverted`], in [0, 1].
    pub fn normalise_frame(&self, frame: u32, window: &Window) -> Option<GrayImage> {
        self.map_frame(frame, |v| window.apply(v))
    }

    /// Whether the grey image is shown inverted: MONOCHROME1, or Presentation LUT Shape
    /// INVERSE (which the DX and MG IODs require with MONOCHROME1: the same inversion, once).
    pub fn inverted(&self) -> bool {
        self.photometric == "MONOCHROME1" || self.presentation_inverse
    }

    fn map_frame(&self, frame: u32, voi: impl Fn(f64) -> f64) -> Option<GrayImage> {
        let invert = self.inverted();
        let data = self
            .frame_values(frame)?
            .iter()
            .map(|&v| {
                let y = voi(f64::from(v)) as f32;
                if invert { 1.0 - y } else { y }
            })
            .collect();
        GrayImage::new(self.columns, self.rows, data)
    }

    /// [`DecodedImage::pixel_sha256`] as lowercase hex.
    pub fn pixel_sha256_hex(&self) -> String {
        self.pixel_sha256.iter().map(|b| format!("{b:02x}")).collect()
    }
}
