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

const IMPLICIT_LE: Encoding = Encoding {
    explicit: false,
    big: false,
};

/// Checks the file meta group of the Part 10 stream `body` (starting at `DICM`); returns where
/// the data set starts.
pub(crate) fn check_meta(body: &[u8]) -> Result<usize, DecodeError> {
    let corrupt = |detail: &str| DecodeError::ReadFileMeta {
        detail: detail.into(),
    };
    // Always explicit VR little endian, group 0002.
    let meta = Encoding {
        explicit: true,
        big: false,
    };
    let mut pos = 4;
    while let Some(g) = u16_at(body, pos, false) {
        if g != 0x0002 {
            break;
        }
        let (len, header) =
            element_header(body, pos, meta).ok_or_else(|| corrupt("truncated file meta group"))?;
        if len == UNDEFINED || len as usize > body.len() - pos - header {
            return Err(corrupt("file meta element length exceeds the input"));
        }
        pos += header + len as usize;
    }
    Ok(pos)
}

/// Checks the data set `data` (after the meta group). `deflated_limit` is `Some(max inflated
/// bytes)` for the deflated transfer syntax.
pub(crate) fn check_data_set(
    data: &[u8],
    encoding: Encoding,
    deflated_limit: Option<u64>,
) -> Result<(), DecodeError> {
    let corrupt = |detail: String| DecodeError::ReadDataSet { detail };
    match deflated_limit {
        None => walk(data, 0, data.len(), encoding, 0)
            .map(|_| ())
            .map_err(corrupt),
        Some(limit) => {
            let mut inflated = Vec::new();
            flate2::read::DeflateDecoder::new(data)
                .take(limit.saturating_add(1))
                .read_to_end(&mut inflated)
                .map_err(|e| corrupt(format!("inflate: {e}")))?;
            if inflated.len() as u64 > limit {
                return Err(DecodeError::TooLarge {
                    what: "inflated data set bytes",
                    value: limit + 1,
                    limit,
                });
            }
            walk(&inflated, 0, inflated.len(), encoding, 0)
                .map(|_| ())
                .map_err(corrupt)
        }
    }
}

fn u16_at(d: &[u8], pos: usize, big: bool) -> Option<u16> {
    let b = d.get(pos..pos.checked_add(2)?)?;
    Some(if big {
        u16::from_be_bytes([b[0], b[1]])
    } else {
        u16::from_le_bytes([b[0], b[1]])
    })
}

fn u32_at(d: &[u8], pos: usize, big: bool) -> Option<u32> {
    let b = d.get(pos..pos.checked_add(4)?)?;
    let b = [b[0], b[1], b[2], b[3]];
    Some(if big {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
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
fn walk(
    d: &[u8],
    mut pos: usize,
    end: usize,
    enc: Encoding,
    depth: usize,
) -> Result<usize, String> {
    if depth > MAX_DEPTH {
        return Err(format!("sequences nested deeper than {MAX_DEPTH}"));
    }
    while pos < end {
        let (Some(group), Some(element)) = (u16_at(d, pos, enc.big), u16_at(d, pos + 2, enc.big))
        else {
            return Ok(end);
        };
        let Some((len, header)) = element_header(d, pos, enc) else {
            return Ok(end);
        };
        if header > end - pos {
            return Err(format!(
                "element header crosses the end of its container at {pos}"
            ));
        }
        if group == 0xFFFE && (element == 0xE00D || element == 0xE0DD) {
            return Ok(pos + 8);
        }
        let tag = Tag(group, element);
        let vr = if enc.explicit && group != 0xFFFE {
            d.get(pos + 4..pos + 6)
        } else {
            None
        };
        pos += header;
        let is_sq = match vr {
            Some(vr) => vr == b"SQ",
            None => !enc.explicit && is_dictionary_sequence(tag),
        };
        // Items of UN with undefined length are implicit VR little endian.
        let item_enc = if vr.is_some_and(is_un) {
            IMPLICIT_LE
        } else {
            enc
        };
        if len == UNDEFINED {
            let raw_items = tag == Tag(0x7FE0, 0x0010);
            pos = items(d, pos, end, item_enc, depth + 1, raw_items)?;
        } else {
            let len = len as usize;
            if len > end - pos {
                return Err(format!(
                    "element ({group:04X},{element:04X}) declares {len} bytes, {} remain",
                    end - pos
                ));
            }
            if is_sq {
                items(d, pos, pos + len, item_enc, depth + 1, false)?;
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
) -> Result<usize, String> {
    if depth > MAX_DEPTH {
        return Err(format!("sequences nested deeper than {MAX_DEPTH}"));
    }
    while pos < end {
        if end - pos < 8 {
            return Err(format!(
                "item header crosses the end of its container at {pos}"
            ));
        }
        let (Some(group), Some(element), Some(len)) = (
            u16_at(d, pos, enc.big),
            u16_at(d, pos + 2, enc.big),
            u32_at(d, pos + 4, enc.big),
        ) else {
            return Ok(end);
        };
        pos += 8;
        match (group, element) {
            (0xFFFE, 0xE0DD) => return Ok(pos),
            (0xFFFE, 0xE000) => {}
            _ => return Ok(end), // not an item: the parser reports it
        }
        if len == UNDEFINED {
            if raw {
                return Err("pixel data fragment of undefined length".into());
            }
            pos = walk(d, pos, end, enc, depth + 1)?;
        } else {
            let len = len as usize;
            if len > end - pos {
                return Err(format!("item declares {len} bytes, {} remain", end - pos));
            }
            if !raw {
                walk(d, pos, pos + len, enc, depth + 1)?;
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

/// Explicit VR bytes the parser reads as UN (UN itself, or not a VR at all).
fn is_un(vr: &[u8]) -> bool {
    !is_short_vr(vr)
        && !matches!(
            vr,
            b"OB"
                | b"OD"
                | b"OF"
                | b"OL"
                | b"OV"
                | b"OW"
                | b"SQ"
                | b"SV"
                | b"UC"
                | b"UR"
                | b"UT"
                | b"UV"
        )
}

fn is_dictionary_sequence(tag: Tag) -> bool {
    StandardDataDictionary
        .by_tag(tag)
        .is_some_and(|e| e.vr() == VirtualVr::Exact(VR::SQ))
}
