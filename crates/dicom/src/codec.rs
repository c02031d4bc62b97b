//! Encapsulated pixel data: fragments to frames, RLE Lossless (ours) and 8-bit JPEG (jpeg-decoder).
//!
//! Why not dicom-pixeldata's codecs: its RLE decoder refuses BitsAllocated 32 and indexes
//! unchecked on short segments, and its JPEG path always lets jpeg-decoder apply a YCbCr→RGB
//! transform when the stream has no Adobe marker, which is wrong for DICOM `RGB` JPEGs (PS3.5
//! 8.2.1: the PhotometricInterpretation says what the components are; pydicom and DCMTK decode
//! such streams without a transform). Here RLE is decoded by PS3.5 Annex G with checked indexing,
//! and JPEG components come back raw unless an Adobe APP14 marker asks for a transform.
//!
//! Output of both: stored samples, little endian, pixel-interleaved, all frames.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::DecodeError;

/// Groups fragments into frames: one frame takes them all; else the Basic Offset Table when it
/// has one entry per frame; else one fragment per frame; else (JPEG only) a new frame at each
/// fragment starting with an SOI marker.
pub(crate) fn frames<'a>(
    ts: &str,
    fragments: &'a [Vec<u8>],
    offset_table: &[u32],
    frames: u32,
    jpeg: bool,
) -> Result<Vec<Vec<&'a [u8]>>, DecodeError> {
    let corrupt = |detail: String| DecodeError::DecodePixelData {
        uid: ts.into(),
        detail,
    };
    let n = frames as usize;
    if n == 1 {
        return Ok(vec![fragments.iter().map(Vec::as_slice).collect()]);
    }
    if offset_table.len() == n {
        // Offsets count item headers (8 bytes each) plus fragment lengths.
        let mut starts = Vec::with_capacity(fragments.len());
        let mut position = 0u64;
        for f in fragments {
            starts.push(position);
            position += 8 + f.len() as u64;
        }
        let mut out = Vec::with_capacity(n);
        for (i, &offset) in offset_table.iter().enumerate() {
            let end = offset_table.get(i + 1).map_or(u64::MAX, |&e| u64::from(e));
            let group: Vec<&[u8]> = fragments
                .iter()
                .zip(&starts)
                .filter(|(_, s)| **s >= u64::from(offset) && **s < end)
                .map(|(f, _)| f.as_slice())
                .collect();
            if group.is_empty() {
                return Err(corrupt(format!(
                    "basic offset table entry {i} points at no fragment"
                )));
            }
            out.push(group);
        }
        return Ok(out);
    }
    if fragments.len() == n {
        return Ok(fragments.iter().map(|f| vec![f.as_slice()]).collect());
    }
    if jpeg {
        let mut out: Vec<Vec<&[u8]>> = Vec::new();
        for f in fragments {
            match out.last_mut() {
                Some(group) if !f.starts_with(&[0xFF, 0xD8]) => group.push(f),
                _ => out.push(vec![f]),
            }
        }
        if out.len() == n {
            return Ok(out);
        }
    }
    Err(corrupt(format!(
        "{} fragments for {n} frames and no usable offset table",
        fragments.len()
    )))
}

/// One RLE frame (PS3.5 Annex G) into `out`: `samples` x `bytes_per_sample` segments, most
/// significant byte first, each `pixels` bytes long after PackBits.
pub(crate) fn decode_rle_frame(
    ts: &str,
    frame: &[u8],
    pixels: usize,
    samples: usize,
    bytes_per_sample: usize,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let corrupt = |detail: &str| DecodeError::DecodePixelData {
        uid: ts.into(),
        detail: format!("RLE: {detail}"),
    };
    let u32_at = |i: usize| {
        frame
            .get(i..i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let segments = u32_at(0).ok_or_else(|| corrupt("no header"))?;
    if segments != samples * bytes_per_sample || segments > 15 {
        return Err(corrupt(
            "segment count does not match SamplesPerPixel x BitsAllocated",
        ));
    }
    let base = out.len();
    let frame_len = pixels * samples * bytes_per_sample;
    // PackBits expands at most 64 times (2 bytes to 128): a header that asks for more than that
    // is corrupt, and is refused before the frame buffer is zero-filled.
    if frame_len > frame.len().saturating_mul(64) {
        return Err(corrupt(
            "fragment too short for Rows x Columns x SamplesPerPixel",
        ));
    }
    out.resize(base + frame_len, 0);
    let mut decoded = Vec::with_capacity(pixels);
    for s in 0..segments {
        let start = u32_at(4 + 4 * s).ok_or_else(|| corrupt("no header"))?;
        let end = if s + 1 < segments {
            u32_at(8 + 4 * s).ok_or_else(|| corrupt("no header"))?
        } else {
            frame.len()
        };
        let segment = frame
            .get(start..end)
            .ok_or_else(|| corrupt("segment offsets out of range"))?;
        packbits(segment, pixels, &mut decoded);
        if decoded.len() < pixels {
            return Err(corrupt("segment shorter than Rows x Columns"));
        }
        let (sample, byte) = (s / bytes_per_sample, s % bytes_per_sample);
        // Segment byte 0 is the most significant: little-endian position bytes_per_sample - 1.
        let offset = sample * bytes_per_sample + (bytes_per_sample - 1 - byte);
        let stride = samples * bytes_per_sample;
        for (p, &b) in decoded.iter().take(pixels).enumerate() {
            out[base + p * stride + offset] = b;
        }
    }
    Ok(())
}

/// PackBits into `out` (cleared first), stopping after `limit` bytes.
fn packbits(src: &[u8], limit: usize, out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < src.len() && out.len() < limit {
        let n = src[i] as i8;
        i += 1;
        if n >= 0 {
            let len = n as usize + 1;
            let end = (i + len).min(src.len());
            out.extend_from_slice(&src[i..end]);
            i = end;
        } else if n != -128 {
            let Some(&b) = src.get(i) else { break };
            out.extend(std::iter::repeat_n(b, (1 - isize::from(n)) as usize));
            i += 1;
        }
    }
    out.truncate(limit);
}

/// What the JPEG stream says about itself before decoding.
pub(crate) struct JpegHeader {
    pub precision: u8,
    /// An Adobe APP14 marker is present (its transform flag then rules, as in Pillow/pydicom).
    pub adobe: bool,
}

/// Walks the markers up to SOS. `None` when the stream does not start like a JPEG.
pub(crate) fn jpeg_header(data: &[u8]) -> Option<JpegHeader> {
    if data.get(0..2)? != [0xFF, 0xD8] {
        return None;
    }
    let (mut i, mut adobe, mut precision) = (2usize, false, None);
    loop {
        if *data.get(i)? != 0xFF {
            return None;
        }
        let mut marker = *data.get(i + 1)?;
        while marker == 0xFF {
            i += 1;
            marker = *data.get(i + 1)?;
        }
        match marker {
            0x01 | 0xD0..=0xD7 => i += 2,
            0xD9 | 0xDA => return precision.map(|precision| JpegHeader { precision, adobe }),
            _ => {
                let len = usize::from(u16::from_be_bytes([*data.get(i + 2)?, *data.get(i + 3)?]));
                if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
                    precision = Some(*data.get(i + 4)?);
                }
                if marker == 0xEE && data.get(i + 4..i + 9) == Some(b"Adobe") {
                    adobe = true;
                }
                i = i.checked_add(2 + len)?;
            }
        }
    }
}

/// One 8-bit JPEG frame into `out` (one byte per sample, interleaved). Returns whether the
/// components were colour-transformed to RGB (only when an Adobe marker asks for it); otherwise
/// they are as coded, as the PhotometricInterpretation describes them. jpeg-decoder runs inside
/// `catch_unwind`: a panic on malformed data becomes [`DecodeError::CodecPanicked`].
pub(crate) fn decode_jpeg_frame(
    ts: &str,
    frame: &[u8],
    rows: u32,
    columns: u32,
    samples: usize,
    out: &mut Vec<u8>,
) -> Result<bool, DecodeError> {
    let corrupt = |detail: String| DecodeError::DecodePixelData {
        uid: ts.into(),
        detail,
    };
    let header = jpeg_header(frame).ok_or_else(|| corrupt("not a JPEG stream".into()))?;
    if header.precision != 8 {
        return Err(DecodeError::UnsupportedJpegPrecision {
            uid: ts.into(),
            precision: header.precision,
        });
    }
    // jpeg-decoder fills a truncated entropy-coded segment instead of failing; we refuse it.
    if !frame[frame.len().saturating_sub(16)..]
        .windows(2)
        .any(|w| w == [0xFF, 0xD9])
    {
        return Err(corrupt(
            "JPEG stream has no end-of-image marker (truncated)".into(),
        ));
    }
    let expected = rows as usize * columns as usize * samples;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut decoder = jpeg_decoder::Decoder::new(frame);
        if samples == 3 && !header.adobe {
            // "RGB" interleaves the (upsampled) components as coded, without conversion.
            // (`ColorTransform::None` is unusable in 0.3.2: it does not interleave and panics on
            // subsampled streams.)
            decoder.set_color_transform(jpeg_decoder::ColorTransform::RGB);
        }
        decoder.set_max_decoding_buffer_size(expected.max(1));
        decoder.read_info()?;
        let info = decoder.info();
        // Size check before the decoder allocates its output.
        if info.is_some_and(|i| (u32::from(i.width), u32::from(i.height)) != (columns, rows)) {
            return Ok((Vec::new(), info));
        }
        decoder.decode().map(|d| (d, info))
    }));
    let (data, info) = match result {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(corrupt(format!("JPEG: {e}"))),
        Err(_) => return Err(DecodeError::CodecPanicked { uid: ts.into() }),
    };
    let info = info.ok_or_else(|| corrupt("JPEG: no frame header".into()))?;
    let components = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => 1,
        jpeg_decoder::PixelFormat::RGB24 => 3,
        other => return Err(corrupt(format!("JPEG: pixel format {other:?}"))),
    };
    if (u32::from(info.width), u32::from(info.height), components) != (columns, rows, samples)
        || data.len() != expected
    {
        return Err(corrupt(format!(
            "JPEG frame is {}x{} with {components} components, the header says {columns}x{rows} with {samples}",
            info.width, info.height
        )));
    }
    out.extend_from_slice(&data);
    Ok(header.adobe && samples == 3)
}
