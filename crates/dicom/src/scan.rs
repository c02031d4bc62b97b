//! Length pre-scan: every declared element and item length must fit in the input before
//! dicom-parser reads it.
//!
//! dicom-parser (0.10) reserves and zero-fills an element's declared length (up to 4 GiB) before
//! it reads the value, so a 3 KB file with one corrupt length costs gigabytes and seconds. This
//! walk checks the structure's lengths only (it leaves everything else to the parser), recursing
//! into sequences (explicit SQ, dictionary SQ in implicit VR, undefined lengths) and refusing
//! nesting deeper than [`MAX_DEPTH`]. For the deflated syntax it inflates the data set first, with
//! a bound, and scans the result; a deflate bomb is refused as too large.

use std::io::Read;

use dicom_core::Tag;
use dicom_core::VR;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_dictionary_std::StandardDataDictionary;

use crate::error::DecodeError;

/// Sequence nesting deeper than this is refused (the parser recurses too).
pub(crate) const MAX_DEPTH: usize = 32;

const UNDEFINED: u32 = 0xFFFF_FFFF;

#[derive(Clone, Copy)]
pub(crate) struct Encoding {
    pub explicit: bool,
    pub big: bool,
}

/// Checks the file meta group of the Part 10 stream `body` (starting at `DICM`); returns where
/// the data set starts and the Transfer Syntax UID (0002,0010), read here rather than by
/// dicom-object's meta reader, which reserves a string element's declared length before it
/// reads it (the fuzz target found a 3 GB allocation there).
pub(crate) fn check_meta(body: &[u8]) -> Result<(usize, String), DecodeError> {
    let corrupt = |detail: &str| DecodeError::ReadFileMeta { detail: detail.into() };
    // Always explicit VR little endian, group 0002.
    let meta = Encoding { explicit: true, big: false };
    let mut pos = 4;
    let mut transfer_syntax = None;
    while let Some(g) = u16_at(body, pos, false) {
        if g != 0x0002 {
            break;
        }
        let (len, header) = element_header(body, pos, meta).ok_or_else(|| corrupt("truncated file meta group"))?;
        if len == UNDEFINED || len as usize > body.len() - pos - header {
            return Err(corrupt("file meta element length exceeds the input"));
        }
        if u16_at(body, pos + 2, false) == Some(0x0010) {
            let value = &body[pos + header..pos + header + len as usize];
            let uid = std::str::from_utf8(value).map_err(|_| corrupt("Transfer Syntax UID is not text"))?;
            transfer_syntax = Some(uid.trim_end_matches(['\0', ' ']).to_string());
        }
        pos += header + len as usize;
    }
    let transfer_syntax = transfer_syntax.ok_or_else(|| corrupt("no Transfer Syntax UID"))?;
    Ok((pos, transfer_syntax))
}

/// Where the top-level PixelData element sits in the (inflated) data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PixelDataAt {
    /// Start of the element header: the data set before it is the image header.
    pub header_start: usize,
    /// Start of the value.
    pub value_start: usize,
    /// The declared length; `None` for undefined length (encapsulated pixel data).
    pub length: Option<usize>,
    /// The explicit VR bytes, `None` in implicit VR.
    pub vr: Option<[u8; 2]>,
}

/// A data set whose declared lengths all fit, and where its PixelData is.
pub(crate) struct Scanned<'a> {
    pub data: std::borrow::Cow<'a, [u8]>,
    pub pixel_data: Option<PixelDataAt>,
}

/// The image attributes of the top level, read from their raw bytes before parsing, so that a
/// deflated data set can be bounded by the image it declares before its pixels are inflated.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeclaredImage {
    pub rows: Option<u32>,
    pub columns: Option<u32>,
    pub frames: Option<u32>,
    pub samples: Option<u32>,
    pub bits_allocated: Option<u32>,
}

impl DeclaredImage {
    /// Samples of the whole object (rows x columns x frames x samples per pixel; a missing
    /// attribute counts as 1 for frames and samples, 0 for rows and columns), saturating.
    pub fn samples(&self) -> u64 {
        let n = |v: Option<u32>, missing: u64| v.map_or(missing, u64::from);
        n(self.rows, 0).saturating_mul(n(self.columns, 0)).saturating_mul(n(self.frames, 1)).saturating_mul(n(self.samples, 1))
    }
}

/// Checks a declared image against the limits; returns the most pixel bytes it may have.
pub(crate) type PixelBudget<'a> = &'a dyn Fn(&DeclaredImage) -> Result<u64, DecodeError>;

/// The most a deflated data set may inflate to before its PixelData element starts.
pub(crate) const MAX_INFLATED_HEADER: usize = 64 << 20;
/// Slack allowed after the pixel data (trailing elements, padding).
const TRAILER_SLACK: usize = 1 << 20;

/// Checks the data set `data` (after the meta group); for the deflated transfer syntax
/// (`deflated` is `Some`) inflates it first, with a bound derived from the image it declares:
/// `deflated` is called with the declared image attributes once the top-level PixelData element
/// is reached and returns the most pixel bytes it accepts (or refuses the image, before its
/// pixels are inflated). Before PixelData, at most [`MAX_INFLATED_HEADER`] bytes are inflated.
pub(crate) fn check_data_set<'a>(
    data: &'a [u8],
    encoding: Encoding,
    deflated: Option<PixelBudget<'_>>,
) -> Result<Scanned<'a>, DecodeError> {
    let corrupt = |detail: String| DecodeError::ReadDataSet { detail };
    let data: std::borrow::Cow<'a, [u8]> = match deflated {
        None => data.into(),
        Some(budget) => inflate_bounded(data, encoding, budget)?.into(),
    };
    let mut pixel_data = None;
    walk(&data, 0, data.len(), encoding, 0, &mut pixel_data).map_err(corrupt)?;
    Ok(Scanned { data, pixel_data })
}

/// Inflates `data` in chunks; once the top-level PixelData element is in view, the image it
/// declares sets the cap (pixel bytes by `budget`, times 2 for encapsulated data, plus slack).
fn inflate_bounded(data: &[u8], encoding: Encoding, budget: PixelBudget<'_>) -> Result<Vec<u8>, DecodeError> {
    const CHUNK: usize = 256 << 10;
    let mut decoder = flate2::read::DeflateDecoder::new(data);
    let mut out: Vec<u8> = Vec::new();
    let mut cap = MAX_INFLATED_HEADER;
    let mut capped = false;
    let mut next_probe = CHUNK;
    loop {
        let len = out.len();
        let want = CHUNK.min(cap + 1 - len);
        out.try_reserve(want).map_err(|_| DecodeError::Allocate { bytes: (len + want) as u64 })?;
        out.resize(len + want, 0);
        let n = decoder.read(&mut out[len..]).map_err(|e| DecodeError::ReadDataSet { detail: format!("inflate: {e}") })?;
        out.truncate(len + n);
        let done = n == 0;
        if !capped && (done || out.len() >= next_probe) {
            next_probe = out.len().saturating_mul(2);
            if let Some((declared, at)) = probe(&out, encoding) {
                let pixel_bytes = usize::try_from(budget(&declared)?).unwrap_or(usize::MAX);
                let pixels = match at.length {
                    Some(_) => pixel_bytes,
                    None => pixel_bytes.saturating_mul(2),
                };
                cap = at.value_start.saturating_add(pixels).saturating_add(TRAILER_SLACK);
                capped = true;
                if let Some(extra) = cap.checked_sub(out.len()) {
                    out.try_reserve_exact(extra.min(1 << 31)).map_err(|_| DecodeError::Allocate { bytes: cap as u64 })?;
                }
            }
        }
        if done {
            return Ok(out);
        }
        if out.len() > cap {
            return Err(DecodeError::TooLarge {
                what: if capped { "inflated data set bytes for the declared image" } else { "inflated data set bytes before PixelData" },
                value: out.len() as u64,
                limit: cap as u64,
            });
        }
    }
}

/// The image a data set (after the meta group) declares, read from the raw element headers up to
/// PixelData without parsing or decoding. A deflated data set is inflated only until PixelData
/// is in view, and at most 1 MiB: a header longer than that declares `None`.
pub(crate) fn declared(data: &[u8], encoding: Encoding, deflated: bool) -> Option<DeclaredImage> {
    if !deflated {
        return probe(data, encoding).map(|(d, _)| d);
    }
    let mut decoder = flate2::read::DeflateDecoder::new(data);
    let mut head = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    while head.len() < 1 << 20 {
        let n = decoder.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some((d, _)) = probe(&head, encoding) {
            return Some(d);
        }
    }
    None
}

/// Walks the top level of a possibly incomplete data set up to PixelData, collecting the image
/// attributes. `None` while PixelData is not in view (or the structure cannot be followed; the
/// full walk reports that).
fn probe(d: &[u8], enc: Encoding) -> Option<(DeclaredImage, PixelDataAt)> {
    let mut declared = DeclaredImage::default();
    let mut pos = 0usize;
    loop {
        let group = u16_at(d, pos, enc.big)?;
        let element = u16_at(d, pos + 2, enc.big)?;
        let (len, header) = element_header(d, pos, enc)?;
        let vr = if enc.explicit { d.get(pos + 4..pos + 6).map(|v| [v[0], v[1]]) } else { None };
        if (group, element) == (0x7FE0, 0x0010) {
            let at = PixelDataAt { header_start: pos, value_start: pos + header, length: (len != UNDEFINED).then_some(len as usize), vr };
            return Some((declared, at));
        }
        let value_start = pos.checked_add(header)?;
        let end = if len == UNDEFINED {
            let mut ignored = None;
            items(d, value_start, d.len(), enc, 1, false, &mut ignored).ok()?
        } else {
            value_start.checked_add(len as usize)?
        };
        let value = d.get(value_start..end)?;
        let us = || -> Option<u32> {
            let b = value.get(0..2)?;
            Some(u32::from(if enc.big { u16::from_be_bytes([b[0], b[1]]) } else { u16::from_le_bytes([b[0], b[1]]) }))
        };
        match (group, element) {
            (0x0028, 0x0010) => declared.rows = us(),
            (0x0028, 0x0011) => declared.columns = us(),
            (0x0028, 0x0002) => declared.samples = us(),
            (0x0028, 0x0100) => declared.bits_allocated = us(),
            (0x0028, 0x0008) => {
                declared.frames = std::str::from_utf8(value).ok().and_then(|s| s.trim_matches(['\0', ' ']).parse().ok());
            }
            _ => {}
        }
        pos = end;
    }
}

fn u16_at(d: &[u8], pos: usize, big: bool) -> Option<u16> {
    let b = d.get(pos..pos.checked_add(2)?)?;
    Some(if big { u16::from_be_bytes([b[0], b[1]]) } else { u16::from_le_bytes([b[0], b[1]]) })
}

fn u32_at(d: &[u8], pos: usize, big: bool) -> Option<u32> {
    let b = d.get(pos..pos.checked_add(4)?)?;
    let b = [b[0], b[1], b[2], b[3]];
    Some(if big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
}

/// (declared length, header size) of the element at `pos`.
fn element_header(d: &[u8], pos: usize, enc: Encoding) -> Option<(u32, usize)> {
    let group = u16_at(d, pos, enc.big)?;
    if enc.explicit && group != 0xFFFE {
        // As dicom-encoding reads it: these VRs have a 16-bit length; every other VR, known or
        // not (an unknown VR is read as UN), has 2 reserved bytes and a 32-bit length.
        if is_short_vr(d.get(pos + 4..pos + 6)?) {
            Some((u16_at(d, pos + 6, enc.big)?.into(), 8))
        } else {
            Some((u32_at(d, pos + 8, enc.big)?, 12))
        }
    } else {
        Some((u32_at(d, pos + 4, enc.big)?, 8))
    }
}

/// Walks elements from `pos` to `end` or to a delimiter; returns where it stopped.
/// Headers that cannot be read are left to the parser (the walk stops); only a length beyond
/// the input, or too deep nesting, is an error.
fn walk(d: &[u8], mut pos: usize, end: usize, enc: Encoding, depth: usize, pixel_data: &mut Option<PixelDataAt>) -> Result<usize, String> {
    if depth > MAX_DEPTH {
        return Err(format!("sequences nested deeper than {MAX_DEPTH}"));
    }
    while pos < end {
        let (Some(group), Some(element)) = (u16_at(d, pos, enc.big), u16_at(d, pos + 2, enc.big)) else {
            return Ok(end);
        };
        let Some((len, header)) = element_header(d, pos, enc) else {
            return Ok(end);
        };
        if header > end - pos {
            return Err(format!("element header crosses the end of its container at {pos}"));
        }
        if group == 0xFFFE && (element == 0xE00D || element == 0xE0DD) {
            // A delimiter outside any item, or with a length, is refused: dicom-parser reads its
            // length as a value (a fuzzed 0xFF000000 cost 4 GB; fuzz/regressions/).
            if depth == 0 || len != 0 {
                return Err(format!("misplaced delimiter ({group:04X},{element:04X}) at {pos}"));
            }
            return Ok(pos + 8);
        }
        let tag = Tag(group, element);
        let vr = if enc.explicit && group != 0xFFFE { d.get(pos + 4..pos + 6) } else { None };
        // A binary VR whose length is not a whole number of values desynchronises dicom-parser
        // (fuzz: SamplesPerPixel as SL of length 2 led it to reserve 1.2 GB).
        // In implicit VR the parser takes the dictionary's VR, so that one is checked.
        let dictionary_vr = if vr.is_none() && group != 0xFFFE {
            StandardDataDictionary.by_tag(tag).and_then(|e| match e.vr() {
                VirtualVr::Exact(v) => Some(v.to_bytes()),
                _ => None,
            })
        } else {
            None
        };
        if let Some(vr) = vr.or(dictionary_vr.as_ref().map(|v| &v[..]))
            && len != UNDEFINED
        {
            let size = match vr {
                b"SS" | b"US" | b"OW" => 2,
                b"SL" | b"UL" | b"FL" | b"AT" | b"OL" | b"OF" => 4,
                b"FD" | b"SV" | b"UV" | b"OD" | b"OV" => 8,
                _ => 1,
            };
            if len % size != 0 {
                return Err(format!(
                    "element ({group:04X},{element:04X}) of VR {} has length {len}, not a multiple of {size}",
                    String::from_utf8_lossy(vr)
                ));
            }
        }
        if depth == 0 && tag == Tag(0x7FE0, 0x0010) && pixel_data.is_none() {
            *pixel_data = Some(PixelDataAt {
                header_start: pos,
                value_start: pos + header,
                length: (len != UNDEFINED).then_some(len as usize),
                vr: vr.map(|v| [v[0], v[1]]),
            });
        }
        pos += header;
        let is_sq = match vr {
            Some(vr) => vr == b"SQ",
            None => !enc.explicit && is_dictionary_sequence(tag),
        };
        // PS3.5 6.2.2 says the items of a UN of undefined length are implicit VR little endian,
        // but dicom-parser (0.10) reads every undefined-length element as a sequence in the data
        // set's own encoding, and this walk must see what the parser will read: walked as
        // implicit VR, a fuzzed UN hid an explicit-VR length of 4 GB that the parser then
        // zero-filled (fuzz/regressions/parser-un-items-explicit-4gb.dcm).
        if len == UNDEFINED {
            let raw_items = tag == Tag(0x7FE0, 0x0010);
            pos = items(d, pos, end, enc, depth + 1, raw_items, pixel_data)?;
        } else {
            let len = len as usize;
            if len > end - pos {
                return Err(format!("element ({group:04X},{element:04X}) declares {len} bytes, {} remain", end - pos));
            }
            if is_sq {
                let stop = items(d, pos, pos + len, enc, depth + 1, false, pixel_data)?;
                // A sequence of defined length ends at its length, not at a delimiter: the parser
                // would stop at the delimiter and read on from there (fuzz/open/ before this).
                if stop != pos + len {
                    return Err(format!("sequence ({group:04X},{element:04X}) of length {len} ends at a delimiter"));
                }
            }
            pos += len;
        }
    }
    Ok(pos)
}

/// Walks the items of a sequence (or encapsulated pixel data when `raw`) until the sequence
/// delimiter or `end`.
fn items(
    d: &[u8],
    mut pos: usize,
    end: usize,
    enc: Encoding,
    depth: usize,
    raw: bool,
    pixel_data: &mut Option<PixelDataAt>,
) -> Result<usize, String> {
    if depth > MAX_DEPTH {
        return Err(format!("sequences nested deeper than {MAX_DEPTH}"));
    }
    while pos < end {
        if end - pos < 8 {
            return Err(format!("item header crosses the end of its container at {pos}"));
        }
        let (Some(group), Some(element), Some(len)) = (u16_at(d, pos, enc.big), u16_at(d, pos + 2, enc.big), u32_at(d, pos + 4, enc.big))
        else {
            return Ok(end);
        };
        pos += 8;
        match (group, element) {
            (0xFFFE, 0xE0DD) => return Ok(pos),
            (0xFFFE, 0xE000) => {}
            // Not an item: refused here, because dicom-parser reads on (an undefined-length
            // element as a sequence) and zero-fills whatever lengths it then finds: one changed
            // length byte in pydicom's ExplVR_BigEnd.dcm cost 1.4 GB and 4 s per decode.
            _ => {
                return Err(format!("({group:04X},{element:04X}) where a sequence item was expected at {}", pos - 8));
            }
        }
        if len == UNDEFINED {
            if raw {
                return Err("pixel data fragment of undefined length".into());
            }
            pos = walk(d, pos, end, enc, depth + 1, pixel_data)?;
        } else {
            let len = len as usize;
            if len > end - pos {
                return Err(format!("item declares {len} bytes, {} remain", end - pos));
            }
            if !raw {
                walk(d, pos, pos + len, enc, depth + 1, pixel_data)?;
            }
            pos += len;
        }
    }
    Ok(pos)
}

fn is_short_vr(vr: &[u8]) -> bool {
    matches!(
        vr,
        b"AE"
            | b"AS"
            | b"AT"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"FL"
            | b"FD"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"PN"
            | b"SH"
            | b"SL"
            | b"SS"
            | b"ST"
            | b"TM"
            | b"UI"
            | b"UL"
            | b"US"
    )
}

fn is_dictionary_sequence(tag: Tag) -> bool {
    StandardDataDictionary.by_tag(tag).is_some_and(|e| e.vr() == VirtualVr::Exact(VR::SQ))
}
