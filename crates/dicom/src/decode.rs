//! Part 10 bytes to modality values: header checks, limits, native sample unpacking, codecs.
//!
//! Order of work in [`decode_with`]:
//! 1. read the file meta group and check the transfer syntax against [`SUPPORTED_TRANSFER_SYNTAXES`];
//! 2. pre-scan every declared length against the input (`scan`), then parse (dicom-object);
//! 3. read the image attributes and check them against [`DecodeLimits`] (no pixel allocated yet);
//! 4. get little-endian stored samples: native pixel data as stored (length checked), or the
//!    output of our RLE decoder / jpeg-decoder (JPEG precision checked first; panics caught);
//! 5. unpack each sample (mask to BitsStored, sign-extend), hash it, apply the modality LUT
//!    (rescale) or, for colour, take the luma;
//! 6. choose the window: from the file, or percentiles of the default frame.

use std::borrow::Cow;

use dicom_core::Tag;
use dicom_core::header::HasLength;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use sha2::{Digest, Sha256};

use crate::error::DecodeError;
use crate::voi::{Percentiles, VoiFunction, VoiLut, Window, WindowSource};
use crate::{codec, scan};

/// Transfer syntaxes [`decode`] accepts, with their names. Everything else is refused with
/// [`DecodeError::UnsupportedTransferSyntax`].
pub const SUPPORTED_TRANSFER_SYNTAXES: &[(&str, &str)] = &[
    (IMPLICIT_VR_LE, "Implicit VR Little Endian"),
    (EXPLICIT_VR_LE, "Explicit VR Little Endian"),
    (EXPLICIT_VR_BE, "Explicit VR Big Endian (retired)"),
    (DEFLATED_EXPLICIT_VR_LE, "Deflated Explicit VR Little Endian"),
    (RLE_LOSSLESS, "RLE Lossless"),
    (JPEG_BASELINE, "JPEG Baseline (Process 1), 8-bit"),
    (JPEG_EXTENDED, "JPEG Extended (Process 2 & 4), 8 and 12 bits"),
    (JPEG_LOSSLESS, "JPEG Lossless, Non-Hierarchical (Process 14), 2 to 16 bits"),
    (JPEG_LOSSLESS_SV1, "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 SV1), 2 to 16 bits"),
    (JPEG_LS_LOSSLESS, "JPEG-LS Lossless"),
    (JPEG_LS_NEAR_LOSSLESS, "JPEG-LS Lossy (Near-Lossless)"),
    (JPEG_2000_LOSSLESS, "JPEG 2000 Image Compression (Lossless Only)"),
    (JPEG_2000, "JPEG 2000 Image Compression"),
];

const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";
const JPEG_LOSSLESS: &str = "1.2.840.10008.1.2.4.57";
const JPEG_LOSSLESS_SV1: &str = "1.2.840.10008.1.2.4.70";
const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
const JPEG_LS_NEAR_LOSSLESS: &str = "1.2.840.10008.1.2.4.81";
const JPEG_2000_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";
const JPEG_2000: &str = "1.2.840.10008.1.2.4.91";

/// Bounds checked from the header before any pixel is allocated or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Default 16384.
    pub max_rows: u32,
    /// Default 16384.
    pub max_columns: u32,
    /// Default 2000.
    pub max_frames: u32,
    /// Bound on both the decoded stored pixel bytes (Rows x Columns x Frames x Samples x
    /// BitsAllocated/8) and the f32 modality values kept in [`DecodedImage`]
    /// (Rows x Columns x Frames x 4). Default 1 GiB.
    pub max_pixel_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_rows: 16384, max_columns: 16384, max_frames: 2000, max_pixel_bytes: 1 << 30 }
    }
}

/// Everything [`decode_with`] can be told. `DecodeOptions::default()` is what [`decode`] uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeOptions {
    pub limits: DecodeLimits,
    /// The window used when the file has none (default 0.5 % to 99.5 % of the default frame).
    pub percentiles: Percentiles,
    /// Decoded-pixel budget of one frame (Rows x Columns), checked with [`DecodeLimits`] before
    /// anything is allocated or inflated. Default 64 Mi (67,108,864: 8192 x 8192).
    pub max_pixels_per_frame: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { limits: DecodeLimits::default(), percentiles: Percentiles::default(), max_pixels_per_frame: 64 << 20 }
    }
}

/// A decoded image: the header facts radsight records, and every frame's modality values.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedImage {
    pub rows: u32,
    pub columns: u32,
    pub frames: u32,
    /// Transfer syntax UID of the input.
    pub transfer_syntax: String,
    /// Photometric interpretation of the input, e.g. `MONOCHROME2`, `RGB`, `YBR_FULL_422`.
    pub photometric: String,
    pub samples_per_pixel: u16,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    /// PixelRepresentation 1.
    pub signed: bool,
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub sop_class_uid: Option<String>,
    pub series_instance_uid: Option<String>,
    pub study_instance_uid: Option<String>,
    /// frames x rows x columns, row-major: stored values after the modality LUT (rescale
    /// slope/intercept); for colour input the Rec. 601 luma `0.299 R + 0.587 G + 0.114 B` of the
    /// stored RGB values (no rescale applies to colour).
    pub modality_values: Vec<f32>,
    /// The VOI window [`DecodedImage::normalised_frame`] applies (when there is no VOI LUT).
    pub window: Window,
    /// The first item of the file's VOI LUT Sequence (top level, else the Frame VOI LUT
    /// functional group), which [`DecodedImage::normalised_frame`] applies instead of the window
    /// (as pydicom's `apply_voi_lut` prefers it). Grey images only.
    pub voi_lut: Option<VoiLut>,
    /// Presentation LUT Shape is INVERSE (see [`DecodedImage::inverted`]).
    pub presentation_inverse: bool,
    /// The physical size of a pixel, when the file states one (areas in mm² need it).
    pub pixel_spacing: Option<PixelSpacing>,
    /// SHA-256 of the decoded stored samples, before masking and rescale: one little-endian word
    /// of BitsAllocated bits (one byte for 1-bit images) per sample, pixel-interleaved, all frames
    /// (YBR_FULL_422 native data is hashed as stored). Equal for the same pixels in any lossless
    /// transfer syntax.
    pub pixel_sha256: [u8; 32],
}

/// The image a Part 10 object declares (Rows, Columns, NumberOfFrames, SamplesPerPixel,
/// BitsAllocated), read from its element headers without parsing or decoding anything, so that
/// a caller can budget memory before [`decode_with`]. `None` when the header cannot be read that
/// way (the decode then reports why).
pub fn declared_image(bytes: &[u8]) -> Option<scan::DeclaredImage> {
    let body = &bytes[part10_start(bytes).ok()?..];
    let (data_set_start, ts) = scan::check_meta(body).ok()?;
    let encoding = match ts.as_str() {
        IMPLICIT_VR_LE => scan::Encoding { explicit: false, big: false },
        EXPLICIT_VR_BE => scan::Encoding { explicit: true, big: true },
        _ => scan::Encoding { explicit: true, big: false },
    };
    scan::declared(&body[data_set_start..], encoding, ts == DEFLATED_EXPLICIT_VR_LE)
}

/// Decodes a DICOM Part 10 object (with or without the 128-byte preamble, as WADO-RS returns it)
/// with default options. See [`decode_with`].
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<DecodedImage, DecodeError> {
    decode_with(bytes, &DecodeOptions { limits: *limits, ..DecodeOptions::default() })
}

/// Decodes a DICOM Part 10 object into modality values and a window.
///
/// Never panics on any input: arithmetic on header values is checked, and the third-party codec
/// call is wrapped in `catch_unwind` as a last resort ([`DecodeError::CodecPanicked`]).
pub fn decode_with(bytes: &[u8], options: &DecodeOptions) -> Result<DecodedImage, DecodeError> {
    let start = part10_start(bytes)?;
    let body = &bytes[start..];
    let (data_set_start, ts) = scan::check_meta(body)?;
    if !SUPPORTED_TRANSFER_SYNTAXES.iter().any(|(uid, _)| *uid == ts) {
        return Err(DecodeError::UnsupportedTransferSyntax { uid: ts });
    }
    let encoding = match ts.as_str() {
        IMPLICIT_VR_LE => scan::Encoding { explicit: false, big: false },
        EXPLICIT_VR_BE => scan::Encoding { explicit: true, big: true },
        _ => scan::Encoding { explicit: true, big: false },
    };
    // The deflated data set is inflated with a cap derived from the image it declares, checked
    // against the limits before its pixels are inflated.
    let budget = |d: &scan::DeclaredImage| -> Result<u64, DecodeError> {
        let missing = |keyword: &str| DecodeError::NotImage { reason: format!("no {keyword}") };
        check_image_limits(
            d.rows.ok_or_else(|| missing("Rows"))?,
            d.columns.ok_or_else(|| missing("Columns"))?,
            d.frames.unwrap_or(1),
            d.samples.unwrap_or(1),
            d.bits_allocated.ok_or_else(|| missing("BitsAllocated"))?,
            options,
        )
    };
    let scanned = scan::check_data_set(
        &body[data_set_start..],
        encoding,
        (ts == DEFLATED_EXPLICIT_VR_LE).then_some(&budget as scan::PixelBudget<'_>),
    )?;
    let data: &[u8] = &scanned.data;
    // The header is parsed without the pixel data, which is read from `data` in place: nothing
    // the size of the pixels is allocated before the limits are checked.
    let header_end = scanned.pixel_data.map_or(data.len(), |p| p.header_start);
    let parse_ts = if ts == DEFLATED_EXPLICIT_VR_LE { EXPLICIT_VR_LE } else { ts.as_str() };
    let parse_ts = TransferSyntaxRegistry.get(parse_ts).ok_or_else(|| DecodeError::UnsupportedTransferSyntax { uid: ts.clone() })?;
    let obj = InMemDicomObject::read_dataset_with_ts(&data[..header_end], parse_ts)
        .map_err(|e| DecodeError::ReadDataSet { detail: e.to_string() })?;

    let header = ImageHeader::read(&obj, scanned.pixel_data.is_some())?;
    check_image_limits(header.rows, header.columns, header.frames, header.samples_per_pixel.into(), header.bits_allocated.into(), options)?;

    let pixel = scanned.pixel_data.ok_or_else(|| DecodeError::NotImage { reason: "no PixelData".into() })?;
    let native = pixel.length.is_some() && codec_of(&ts).is_none();
    if native && matches!(header.photometric, Photometric::YbrIct | Photometric::YbrRct) {
        return Err(DecodeError::UnsupportedImage { reason: format!("{} in native pixel data", header.photometric_text) });
    }
    let (stored, photometric_after, value_bits) = match pixel.length {
        Some(length) if native => {
            let value = data
                .get(pixel.value_start..pixel.value_start.saturating_add(length))
                .ok_or_else(|| DecodeError::ReadDataSet { detail: "PixelData runs past the end".into() })?;
            (native_le_bytes(value, &ts, header.bits_allocated, pixel.vr), header.photometric, header.bits_stored)
        }
        None if !native => {
            let (offset_table, fragments) = encapsulated_items(&ts, data, pixel.value_start)?;
            let offsets = extended_offset_table(&obj)?.unwrap_or(offset_table);
            let (out, photometric, bits) = decode_encapsulated(&ts, &header, &fragments, &offsets)?;
            (Cow::Owned(out), photometric, bits)
        }
        // Encapsulated data in a native syntax, or a defined length in an encapsulated one.
        _ => {
            return Err(DecodeError::InvalidAttribute { keyword: "PixelData" });
        }
    };
    let layout = Layout { header: &header, photometric: photometric_after, planar: native && header.planar, value_bits };
    let expected = layout.stored_bytes();
    if (stored.len() as u64) < expected {
        return Err(if native {
            DecodeError::TruncatedPixelData { expected, actual: stored.len() as u64 }
        } else {
            DecodeError::DecodePixelData { uid: ts.clone(), detail: format!("codec produced {} bytes, expected {expected}", stored.len()) }
        });
    }
    let (modality_values, pixel_sha256) = layout.unpack(&stored[..expected as usize])?;

    let default_frame = header.frames / 2;
    let voi_lut = if header.samples_per_pixel == 1 { voi_lut(&obj, header.signed) } else { None };
    let window = match (header.window, &voi_lut) {
        (Some(w), None) => w,
        (_, Some(lut)) => lut.window(),
        (None, None) => {
            let per_frame = (header.rows as usize) * (header.columns as usize);
            let start = default_frame as usize * per_frame;
            let frame = modality_values.get(start..start + per_frame).unwrap_or(&[]);
            Window::from_percentiles(frame, options.percentiles)
        }
    };
    let presentation_inverse = string(&obj, tags::PRESENTATION_LUT_SHAPE).as_deref() == Some("INVERSE");

    Ok(DecodedImage {
        rows: header.rows,
        columns: header.columns,
        frames: header.frames,
        transfer_syntax: ts,
        photometric: header.photometric_text.clone(),
        samples_per_pixel: header.samples_per_pixel,
        bits_allocated: header.bits_allocated,
        bits_stored: header.bits_stored,
        signed: header.signed,
        modality: string(&obj, tags::MODALITY),
        body_part: string(&obj, tags::BODY_PART_EXAMINED),
        sop_instance_uid: string(&obj, tags::SOP_INSTANCE_UID),
        sop_class_uid: string(&obj, tags::SOP_CLASS_UID),
        series_instance_uid: string(&obj, tags::SERIES_INSTANCE_UID),
        study_instance_uid: string(&obj, tags::STUDY_INSTANCE_UID),
        modality_values,
        window,
        voi_lut,
        presentation_inverse,
        pixel_spacing: pixel_spacing(&obj),
        pixel_sha256,
    })
}

/// The physical distance between pixel centres, in mm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelSpacing {
    /// Between adjacent rows (vertical): the attribute's first value.
    pub row_mm: f64,
    /// Between adjacent columns (horizontal): its second value.
    pub column_mm: f64,
    pub source: SpacingSource,
}

/// Which attribute gave the spacing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpacingSource {
    /// Pixel Spacing (0028,0030): in the patient (calibrated, or the modality's own estimate).
    PixelSpacing,
    /// Imager Pixel Spacing (0018,1164): at the detector, for projection radiographs without
    /// Pixel Spacing; sizes in the patient are smaller by the geometric magnification.
    ImagerPixelSpacing,
}

impl SpacingSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SpacingSource::PixelSpacing => "PixelSpacing",
            SpacingSource::ImagerPixelSpacing => "ImagerPixelSpacing",
        }
    }
}

/// Pixel Spacing, else Imager Pixel Spacing (PS3.3 10.7.1.3); two positive finite values, or none.
fn pixel_spacing(obj: &Obj) -> Option<PixelSpacing> {
    let read = |tag: Tag| {
        let v = obj.element_opt(tag).ok()??.to_multi_float64().ok()?;
        match v.as_slice() {
            [row, column] if row.is_finite() && column.is_finite() && *row > 0.0 && *column > 0.0 => Some((*row, *column)),
            _ => None,
        }
    };
    read(tags::PIXEL_SPACING).map(|(row_mm, column_mm)| PixelSpacing { row_mm, column_mm, source: SpacingSource::PixelSpacing }).or_else(
        || {
            read(tags::IMAGER_PIXEL_SPACING).map(|(row_mm, column_mm)| PixelSpacing {
                row_mm,
                column_mm,
                source: SpacingSource::ImagerPixelSpacing,
            })
        },
    )
}

/// The first VOI LUT Sequence item, at top level or in the Frame VOI LUT functional group.
/// A LUT whose descriptor and data disagree, or whose bit depth is not 1–16, is ignored (the
/// window or the percentiles apply), never guessed.
fn voi_lut(obj: &Obj, signed: bool) -> Option<VoiLut> {
    let item = obj
        .element_opt(tags::VOILUT_SEQUENCE)
        .ok()
        .flatten()
        .and_then(|e| e.items()?.first())
        .or_else(|| functional_group(obj, tags::FRAME_VOILUT_SEQUENCE)?.element_opt(tags::VOILUT_SEQUENCE).ok()??.items()?.first())?;
    let descriptor = item.element_opt(tags::LUT_DESCRIPTOR).ok()??.to_multi_int::<i32>().ok()?;
    let (count, first, bits) = (*descriptor.first()?, *descriptor.get(1)?, *descriptor.get(2)?);
    let count = if count == 0 { 65536 } else { count as usize & 0xFFFF };
    // The first mapped value is signed when the pixels are (PS3.3 C.11.2.1.1), whatever the VR.
    let first = if signed && (32768..65536).contains(&first) { first - 65536 } else { first };
    let bits = u8::try_from(bits).ok().filter(|b| (1..=16).contains(b))?;
    let data: Vec<u16> =
        item.element_opt(tags::LUT_DATA).ok()??.to_multi_int::<u32>().ok()?.into_iter().map(|v| v.min(0xFFFF) as u16).collect();
    (data.len() == count).then_some(VoiLut { first, bits, data })
}

/// The Extended Offset Table (7FE0,0001), little-endian 64-bit offsets, when present; it then
/// replaces the Basic Offset Table (PS3.5 A.4).
fn extended_offset_table(obj: &Obj) -> Result<Option<Vec<u64>>, DecodeError> {
    let Some(e) = obj.element_opt(tags::EXTENDED_OFFSET_TABLE).ok().flatten() else {
        return Ok(None);
    };
    let bytes = e.to_bytes().map_err(|_| DecodeError::InvalidAttribute { keyword: "ExtendedOffsetTable" })?;
    if bytes.len() % 8 != 0 {
        return Err(DecodeError::InvalidAttribute { keyword: "ExtendedOffsetTable" });
    }
    Ok(Some(bytes.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0xFF; 8]))).collect()))
}

/// Where the file meta group starts: after a 128-byte preamble, or at 0.
fn part10_start(bytes: &[u8]) -> Result<usize, DecodeError> {
    if bytes.get(128..132) == Some(b"DICM") {
        Ok(128)
    } else if bytes.get(0..4) == Some(b"DICM") {
        Ok(0)
    } else {
        Err(DecodeError::ReadFileMeta { detail: "no DICM magic at offset 0 or 128".into() })
    }
}

type Obj = InMemDicomObject;

fn string(obj: &Obj, tag: Tag) -> Option<String> {
    let s = obj.element_opt(tag).ok()??.to_str().ok()?;
    let s = s.trim_matches(['\0', ' ']);
    (!s.is_empty()).then(|| s.to_string())
}

fn uint(obj: &Obj, tag: Tag, keyword: &'static str) -> Result<Option<u32>, DecodeError> {
    match obj.element_opt(tag).ok().flatten() {
        None => Ok(None),
        Some(e) if e.is_empty() => Ok(None),
        Some(e) => e.to_int::<u32>().map(Some).map_err(|_| DecodeError::InvalidAttribute { keyword }),
    }
}

fn required(obj: &Obj, tag: Tag, keyword: &'static str) -> Result<u32, DecodeError> {
    uint(obj, tag, keyword)?.ok_or_else(|| DecodeError::NotImage { reason: format!("no {keyword}") })
}

/// First value of a decimal-string attribute, looked up in `item`.
fn first_f64(item: &InMemDicomObject, tag: Tag) -> Option<f64> {
    let v = item.element_opt(tag).ok()??.to_multi_float64().ok()?;
    v.first().copied().filter(|x| x.is_finite())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Photometric {
    Monochrome1,
    Monochrome2,
    Rgb,
    YbrFull,
    YbrFull422,
    /// JPEG 2000 irreversible / reversible colour: the decoder inverts the transform to RGB.
    YbrIct,
    YbrRct,
}

struct ImageHeader {
    rows: u32,
    columns: u32,
    frames: u32,
    samples_per_pixel: u16,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    planar: bool,
    photometric: Photometric,
    photometric_text: String,
    /// (slope, intercept)
    /// (slope, intercept): one pair for all frames, or one per frame.
    rescale: Vec<(f64, f64)>,
    window: Option<Window>,
}

impl ImageHeader {
    fn read(obj: &Obj, has_pixel_data: bool) -> Result<Self, DecodeError> {
        if !has_pixel_data {
            let has = |tag| obj.element_opt(tag).ok().flatten().is_some();
            if has(tags::FLOAT_PIXEL_DATA) || has(tags::DOUBLE_FLOAT_PIXEL_DATA) {
                return Err(DecodeError::UnsupportedImage { reason: "float pixel data".into() });
            }
            // dicom-parser ends a data set quietly at end of input between elements, so a file
            // cut before its PixelData parses. An object with image attributes but no pixels is
            // taken as truncated, not as a non-image.
            if has(tags::ROWS) && has(tags::COLUMNS) && has(tags::BITS_ALLOCATED) {
                return Err(DecodeError::ReadDataSet { detail: "image attributes but no PixelData: truncated object?".into() });
            }
            return Err(DecodeError::NotImage { reason: "no PixelData".into() });
        }
        let rows = required(obj, tags::ROWS, "Rows")?;
        let columns = required(obj, tags::COLUMNS, "Columns")?;
        if rows == 0 {
            return Err(DecodeError::InvalidAttribute { keyword: "Rows" });
        }
        if columns == 0 {
            return Err(DecodeError::InvalidAttribute { keyword: "Columns" });
        }
        let frames = uint(obj, tags::NUMBER_OF_FRAMES, "NumberOfFrames")?.unwrap_or(1);
        if frames == 0 {
            return Err(DecodeError::InvalidAttribute { keyword: "NumberOfFrames" });
        }
        let samples = required(obj, tags::SAMPLES_PER_PIXEL, "SamplesPerPixel")?;
        let bits_allocated = required(obj, tags::BITS_ALLOCATED, "BitsAllocated")?;
        let bits_stored = uint(obj, tags::BITS_STORED, "BitsStored")?.unwrap_or(bits_allocated);
        let high_bit = uint(obj, tags::HIGH_BIT, "HighBit")?.unwrap_or(bits_stored.saturating_sub(1));
        let signed = uint(obj, tags::PIXEL_REPRESENTATION, "PixelRepresentation")?.unwrap_or(0) == 1;
        let planar = uint(obj, tags::PLANAR_CONFIGURATION, "PlanarConfiguration")?.unwrap_or(0) == 1;
        let photometric_text = string(obj, tags::PHOTOMETRIC_INTERPRETATION)
            .ok_or_else(|| DecodeError::NotImage { reason: "no PhotometricInterpretation".into() })?;
        let unsupported = |reason: String| Err(DecodeError::UnsupportedImage { reason });

        if !matches!(bits_allocated, 1 | 8 | 16 | 32) {
            return unsupported(format!("BitsAllocated {bits_allocated}"));
        }
        if bits_stored == 0 || bits_stored > bits_allocated {
            return Err(DecodeError::InvalidAttribute { keyword: "BitsStored" });
        }
        if high_bit + 1 != bits_stored {
            return unsupported(format!("HighBit {high_bit} with BitsStored {bits_stored}"));
        }
        let photometric = match (photometric_text.as_str(), samples) {
            ("MONOCHROME1", 1) => Photometric::Monochrome1,
            ("MONOCHROME2", 1) => Photometric::Monochrome2,
            ("RGB", 3) => Photometric::Rgb,
            ("YBR_FULL", 3) => Photometric::YbrFull,
            ("YBR_FULL_422", 3) => Photometric::YbrFull422,
            ("YBR_ICT", 3) => Photometric::YbrIct,
            ("YBR_RCT", 3) => Photometric::YbrRct,
            (pi, s) => {
                return unsupported(format!("PhotometricInterpretation {pi} with SamplesPerPixel {s}"));
            }
        };
        if samples == 3 && (signed || bits_allocated == 1) {
            return unsupported(format!("colour with BitsAllocated {bits_allocated}, signed {signed}"));
        }
        if photometric == Photometric::YbrFull422 && (columns % 2 != 0 || bits_allocated != 8) {
            return unsupported("YBR_FULL_422 with odd Columns or not 8 bits".into());
        }
        if obj.element_opt(tags::MODALITY_LUT_SEQUENCE).ok().flatten().is_some() {
            return unsupported("Modality LUT Sequence (only rescale slope/intercept is applied)".into());
        }

        let rescale = rescale(obj, frames)?;
        let window = if samples == 1 { file_window(obj) } else { None };
        Ok(ImageHeader {
            rows,
            columns,
            frames,
            samples_per_pixel: samples as u16,
            bits_allocated: bits_allocated as u16,
            bits_stored: bits_stored as u16,
            signed,
            planar,
            photometric,
            photometric_text,
            rescale,
            window,
        })
    }
}

/// Checks an image's declared size against the limits and the per-frame pixel budget, before
/// anything of its size is allocated or inflated; returns the stored pixel bytes it needs.
fn check_image_limits(
    rows: u32,
    columns: u32,
    frames: u32,
    samples: u32,
    bits_allocated: u32,
    options: &DecodeOptions,
) -> Result<u64, DecodeError> {
    let limits = &options.limits;
    let check = |what, value: u64, limit: u64| {
        if value > limit { Err(DecodeError::TooLarge { what, value, limit }) } else { Ok(()) }
    };
    check("Rows", rows.into(), limits.max_rows.into())?;
    check("Columns", columns.into(), limits.max_columns.into())?;
    check("NumberOfFrames", frames.into(), limits.max_frames.into())?;
    let per_frame = u64::from(rows) * u64::from(columns);
    check("pixels per frame", per_frame, options.max_pixels_per_frame)?;
    // u32 x u32 x u32 can overflow u64; saturate, which still exceeds any limit.
    let pixels = per_frame.saturating_mul(frames.into());
    let stored = pixels.saturating_mul(samples.into()).saturating_mul(bits_allocated.into()).div_ceil(8);
    check("decoded pixel bytes", stored, limits.max_pixel_bytes)?;
    check("modality value bytes", pixels.saturating_mul(4), limits.max_pixel_bytes)?;
    Ok(stored)
}

/// Rescale slope and intercept, one pair for all frames or one per frame: top level, else the
/// shared functional groups' Pixel Value Transformation, else each frame's own (enhanced
/// multi-frame), else identity. Per-frame groups that give some frames a rescale and not others,
/// or whose count is not NumberOfFrames, are refused rather than guessed.
fn rescale(obj: &Obj, frames: u32) -> Result<Vec<(f64, f64)>, DecodeError> {
    let top: &InMemDicomObject = obj;
    let from = |item: &InMemDicomObject| Some((first_f64(item, tags::RESCALE_SLOPE)?, first_f64(item, tags::RESCALE_INTERCEPT)?));
    let in_group = |group: &InMemDicomObject| {
        let item = group.element_opt(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE).ok()??.items()?.first()?;
        from(item)
    };
    if let Some(r) = from(top) {
        return Ok(vec![r]);
    }
    let shared =
        top.element_opt(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).ok().flatten().and_then(|e| e.items()?.first().and_then(in_group));
    if let Some(r) = shared {
        return Ok(vec![r]);
    }
    let per_frame: Vec<Option<(f64, f64)>> = top
        .element_opt(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .map(|items| items.iter().map(in_group).collect())
        .unwrap_or_default();
    if per_frame.iter().all(Option::is_none) {
        return Ok(vec![(1.0, 0.0)]);
    }
    if per_frame.len() != frames as usize || per_frame.iter().any(Option::is_none) {
        return Err(DecodeError::InvalidAttribute { keyword: "PerFrameFunctionalGroupsSequence" });
    }
    Ok(per_frame.into_iter().flatten().collect())
}

/// The first item of `seq` inside the shared functional groups, else inside the first frame's.
fn functional_group(obj: &InMemDicomObject, seq: Tag) -> Option<&InMemDicomObject> {
    [tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE].into_iter().find_map(|group| {
        let group = obj.element_opt(group).ok()??.items()?.first()?;
        group.element_opt(seq).ok()??.items()?.first()
    })
}

/// Window centre/width from the file (first value), at top level or in Frame VOI LUT functional
/// groups. A width the function cannot use (< 1 for LINEAR, <= 0 otherwise) or an unknown
/// VOI LUT Function counts as no window.
fn file_window(obj: &Obj) -> Option<Window> {
    let top: &InMemDicomObject = obj;
    let from = |item: &InMemDicomObject| {
        let center = first_f64(item, tags::WINDOW_CENTER)?;
        let width = first_f64(item, tags::WINDOW_WIDTH)?;
        let function = match item.element_opt(tags::VOILUT_FUNCTION).ok().flatten() {
            None => VoiFunction::Linear,
            Some(e) => match e.to_str().ok()?.trim_matches(['\0', ' ']) {
                "" | "LINEAR" => VoiFunction::Linear,
                "LINEAR_EXACT" => VoiFunction::LinearExact,
                "SIGMOID" => VoiFunction::Sigmoid,
                _ => return None,
            },
        };
        let usable = match function {
            VoiFunction::Linear => width >= 1.0,
            _ => width > 0.0,
        };
        usable.then_some(Window { center, width, function, source: WindowSource::File })
    };
    from(top).or_else(|| functional_group(top, tags::FRAME_VOILUT_SEQUENCE).and_then(from))
}

/// Native pixel data as little-endian words, from the bytes as stored (borrowed when they
/// already are).
///
/// Little endian: as stored. Big endian: each BitsAllocated word (16/32) reversed; 1- and 8-bit
/// data in OW is a byte stream in little-endian word order (each 16-bit word swapped), as
/// pydicom reads it; in OB it is as stored.
fn native_le_bytes<'a>(value: &'a [u8], ts: &str, bits_allocated: u16, vr: Option<[u8; 2]>) -> Cow<'a, [u8]> {
    if ts != EXPLICIT_VR_BE {
        return Cow::Borrowed(value);
    }
    let word = if bits_allocated > 8 {
        usize::from(bits_allocated / 8)
    } else if vr == Some(*b"OW") {
        2
    } else {
        return Cow::Borrowed(value);
    };
    let mut out = value.to_vec();
    for w in out.chunks_exact_mut(word) {
        w.reverse();
    }
    Cow::Owned(out)
}

/// The Basic Offset Table and the fragments of encapsulated pixel data starting at `start`
/// (item lengths were checked by the pre-scan; checked again here).
fn encapsulated_items<'a>(ts: &str, data: &'a [u8], start: usize) -> Result<(Vec<u64>, Vec<&'a [u8]>), DecodeError> {
    let corrupt = |detail: &str| DecodeError::DecodePixelData { uid: ts.into(), detail: detail.into() };
    let mut pos = start;
    let mut items = Vec::new();
    while let Some(h) = data.get(pos..pos + 8) {
        let (group, element) = (u16::from_le_bytes([h[0], h[1]]), u16::from_le_bytes([h[2], h[3]]));
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
        pos += 8;
        match (group, element) {
            (0xFFFE, 0xE0DD) => break,
            (0xFFFE, 0xE000) => {
                let item = data.get(pos..pos.saturating_add(len)).ok_or_else(|| corrupt("pixel data item runs past the end"))?;
                items.push(item);
                pos += len;
            }
            _ => return Err(corrupt("expected a pixel data item")),
        }
    }
    let Some((table, fragments)) = items.split_first() else {
        return Err(corrupt("encapsulated pixel data without a Basic Offset Table item"));
    };
    let offsets = table.chunks_exact(4).map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))).collect();
    Ok((offsets, fragments.to_vec()))
}

/// The codec family of an encapsulated transfer syntax.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Codec {
    Rle,
    /// JPEG Baseline / Extended (DCT).
    Jpeg,
    JpegLossless,
    JpegLs,
    Jpeg2000,
}

fn codec_of(ts: &str) -> Option<Codec> {
    match ts {
        RLE_LOSSLESS => Some(Codec::Rle),
        JPEG_BASELINE | JPEG_EXTENDED => Some(Codec::Jpeg),
        JPEG_LOSSLESS | JPEG_LOSSLESS_SV1 => Some(Codec::JpegLossless),
        JPEG_LS_LOSSLESS | JPEG_LS_NEAR_LOSSLESS => Some(Codec::JpegLs),
        JPEG_2000_LOSSLESS | JPEG_2000 => Some(Codec::Jpeg2000),
        _ => None,
    }
}

/// Encapsulated frames into little-endian stored samples, the photometric interpretation of
/// what came out (JPEG YBR_FULL_422 is upsampled by the codec, so it is YBR_FULL here; JPEG 2000
/// YBR_ICT/YBR_RCT come out as RGB), and how many low bits of each word make the value.
///
/// That is BitsStored, except for JPEG 2000, whose output is the decoder's value (clamped by
/// it to the codestream precision): lossy coding can push it past BitsStored, where masking
/// would wrap 4096 to 0, so all BitsAllocated bits are kept, as pydicom does; only an unsigned
/// codestream in a PixelRepresentation 1 object is sign-extended at BitsStored (pydicom's
/// J2K sign correction).
fn decode_encapsulated(
    ts: &str,
    header: &ImageHeader,
    fragments: &[&[u8]],
    offset_table: &[u64],
) -> Result<(Vec<u8>, Photometric, u16), DecodeError> {
    let Some(codec) = codec_of(ts) else {
        // Encapsulated data in a native transfer syntax.
        return Err(DecodeError::InvalidAttribute { keyword: "PixelData" });
    };
    let jpeg = codec == Codec::Jpeg;
    // The precision first: a JPEG precision other than 8 or 12 must say so, not "BitsAllocated".
    let jpeg_precision = if jpeg { fragments.first().and_then(|f| codec::jpeg_header(f)).map(|h| h.precision) } else { None };
    if let Some(precision) = jpeg_precision
        && precision != 8
        && precision != 12
    {
        return Err(DecodeError::UnsupportedJpegPrecision { uid: ts.into(), precision });
    }
    let jpeg12 = jpeg_precision == Some(12);
    let starts_frame = |f: &[u8]| match codec {
        Codec::Jpeg | Codec::JpegLossless | Codec::JpegLs => f.starts_with(&[0xFF, 0xD8]),
        Codec::Jpeg2000 => f.starts_with(&[0xFF, 0x4F, 0xFF, 0x51]) || f.get(4..8) == Some(b"jP  "),
        Codec::Rle => false,
    };
    let frames = codec::frames(
        ts,
        fragments,
        offset_table,
        header.frames,
        (codec != Codec::Rle).then_some(&starts_frame as codec::StartsFrame<'_>),
    )?;
    let samples = usize::from(header.samples_per_pixel);
    let pixels = header.rows as usize * header.columns as usize;
    let bytes = usize::from(header.bits_allocated.div_ceil(8));
    let total = pixels * samples * bytes * frames.len(); // bounded by check_limits
    let mut out = Vec::new();
    out.try_reserve_exact(total).map_err(|_| DecodeError::Allocate { bytes: total as u64 })?;
    let mut photometric = match header.photometric {
        Photometric::YbrFull422 => Photometric::YbrFull,
        Photometric::YbrIct | Photometric::YbrRct => Photometric::Rgb,
        other => other,
    };
    if jpeg && header.bits_allocated != if jpeg12 { 16 } else { 8 } {
        return Err(DecodeError::UnsupportedImage { reason: format!("JPEG with BitsAllocated {}", header.bits_allocated) });
    }
    if codec != Codec::Jpeg2000 && matches!(header.photometric, Photometric::YbrIct | Photometric::YbrRct) {
        return Err(DecodeError::UnsupportedImage { reason: format!("{} outside JPEG 2000", header.photometric_text) });
    }
    if header.bits_allocated == 1 {
        return Err(DecodeError::UnsupportedImage { reason: "encapsulated pixel data with BitsAllocated 1".into() });
    }
    let geometry = codec::FrameGeometry { rows: header.rows, columns: header.columns, samples, bytes_per_sample: bytes };
    let mut value_bits = header.bits_stored;
    let mut joined = Vec::new();
    for group in frames {
        let frame: &[u8] = if group.len() == 1 {
            group[0]
        } else {
            joined.clear();
            group.iter().for_each(|f| joined.extend_from_slice(f));
            &joined
        };
        match codec {
            Codec::Jpeg if jpeg12 => codec::decode_jpeg12_frame(ts, frame, geometry, &mut out)?,
            Codec::Jpeg => {
                if codec::decode_jpeg_frame(ts, frame, header.rows, header.columns, samples, &mut out)? {
                    photometric = Photometric::Rgb;
                }
            }
            Codec::JpegLossless => {
                codec::decode_jpeg_lossless_frame(ts, frame, geometry, &mut out)?;
            }
            Codec::JpegLs => codec::decode_jpegls_frame(ts, frame, geometry, &mut out)?,
            Codec::Jpeg2000 => {
                let codestream_signed = codec::decode_j2k_frame(ts, frame, geometry, &mut out)?;
                if codestream_signed || !header.signed {
                    value_bits = header.bits_allocated;
                }
            }
            Codec::Rle => codec::decode_rle_frame(ts, frame, pixels, samples, bytes, &mut out)?,
        }
    }
    Ok((out, photometric, value_bits))
}

struct Layout<'a> {
    header: &'a ImageHeader,
    /// The low bits of each stored word that make the value (masked and sign-extended there).
    value_bits: u16,
    photometric: Photometric,
    planar: bool,
}

impl Layout<'_> {
    fn pixels_per_frame(&self) -> usize {
        self.header.rows as usize * self.header.columns as usize
    }

    /// Stored bytes all frames need (saturating; `check_limits` bounded it already).
    fn stored_bytes(&self) -> u64 {
        let h = self.header;
        let samples_per_pixel = if self.photometric == Photometric::YbrFull422 { 2 } else { h.samples_per_pixel.into() };
        let bits = (self.pixels_per_frame() as u64)
            .saturating_mul(h.frames.into())
            .saturating_mul(samples_per_pixel)
            .saturating_mul(h.bits_allocated.into());
        bits.div_ceil(8)
    }

    /// Masks, sign-extends, hashes and rescales every sample; colour becomes luma.
    fn unpack(&self, stored: &[u8]) -> Result<(Vec<f32>, [u8; 32]), DecodeError> {
        let h = self.header;
        let n = self.pixels_per_frame() * h.frames as usize;
        let mut out: Vec<f32> = Vec::new();
        out.try_reserve_exact(n).map_err(|_| DecodeError::Allocate { bytes: n as u64 * 4 })?;
        let mut hasher = Sha256::new();
        let bytes_per_sample = usize::from(h.bits_allocated / 8);
        let bits = self.value_bits;
        let mask: u32 = if bits >= 32 { u32::MAX } else { (1u32 << bits) - 1 };
        let sign_bit: u32 = 1u32 << (bits - 1);
        let value = |raw: u32| -> f64 {
            let v = raw & mask;
            if h.signed && v & sign_bit != 0 { f64::from(v) - 2f64.powi(bits.into()) } else { f64::from(v) }
        };
        let word = |i: usize| -> u32 {
            let b = &stored[i * bytes_per_sample..(i + 1) * bytes_per_sample];
            match bytes_per_sample {
                1 => b[0].into(),
                2 => u16::from_le_bytes([b[0], b[1]]).into(),
                _ => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            }
        };
        let ppf = self.pixels_per_frame();
        // Modality LUT of frame f.
        let rescale_of = |f: usize| h.rescale.get(f).or(h.rescale.first()).copied().unwrap_or((1.0, 0.0));
        let frames = h.frames as usize;
        match (h.samples_per_pixel, self.photometric) {
            (1, _) if h.bits_allocated == 1 => {
                let bits: Vec<u8> = (0..n).map(|i| (stored[i / 8] >> (i % 8)) & 1).collect();
                hasher.update(&bits);
                for (f, frame) in bits.chunks(ppf).enumerate() {
                    let (slope, intercept) = rescale_of(f);
                    out.extend(frame.iter().map(|&b| (value(b.into()) * slope + intercept) as f32));
                }
            }
            (1, _) => {
                hasher.update(stored);
                for f in 0..frames {
                    let (slope, intercept) = rescale_of(f);
                    out.extend((f * ppf..(f + 1) * ppf).map(|i| (value(word(i)) * slope + intercept) as f32));
                }
            }
            (_, Photometric::YbrFull422) => {
                // Y0 Y1 Cb Cr for every two pixels; luma is Y.
                hasher.update(stored);
                out.extend((0..n).map(|i| f32::from(stored[(i / 2) * 4 + (i % 2)])));
            }
            (_, pi) => {
                let mut interleaved = Vec::new();
                interleaved.try_reserve_exact(stored.len()).map_err(|_| DecodeError::Allocate { bytes: stored.len() as u64 })?;
                for f in 0..h.frames as usize {
                    for p in 0..ppf {
                        let idx = |c: usize| {
                            if self.planar { f * ppf * 3 + c * ppf + p } else { (f * ppf + p) * 3 + c }
                        };
                        let (a, b, c) = (word(idx(0)), word(idx(1)), word(idx(2)));
                        for s in [a, b, c] {
                            interleaved.extend_from_slice(&s.to_le_bytes()[..bytes_per_sample]);
                        }
                        let (a, b, c) = (value(a), value(b), value(c));
                        out.push(match pi {
                            Photometric::YbrFull => a as f32,
                            _ => (0.299 * a + 0.587 * b + 0.114 * c) as f32,
                        });
                    }
                }
                hasher.update(&interleaved);
            }
        }
        Ok((out, hasher.finalize().into()))
    }
}
