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

/// Whether a fragment starts a new codestream (a JPEG SOI, a JPEG 2000 SOC/SIZ or JP2 signature).
pub(crate) type StartsFrame<'a> = &'a dyn Fn(&[u8]) -> bool;

/// Groups fragments into frames: one frame takes them all; else the offset table (Extended, or
/// Basic) when it has one entry per frame; else one fragment per frame; else (when the codec
/// can tell, `starts_frame`) a new frame at each fragment that starts a codestream.
pub(crate) fn frames<'a>(
    ts: &str,
    fragments: &[&'a [u8]],
    offset_table: &[u64],
    frames: u32,
    starts_frame: Option<StartsFrame<'_>>,
) -> Result<Vec<Vec<&'a [u8]>>, DecodeError> {
    let corrupt = |detail: String| DecodeError::DecodePixelData { uid: ts.into(), detail };
    let n = frames as usize;
    if n == 1 {
        return Ok(vec![fragments.to_vec()]);
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
            let end = offset_table.get(i + 1).copied().unwrap_or(u64::MAX);
            let group: Vec<&[u8]> = fragments.iter().zip(&starts).filter(|(_, s)| **s >= offset && **s < end).map(|(f, _)| *f).collect();
            if group.is_empty() {
                return Err(corrupt(format!("offset table entry {i} points at no fragment")));
            }
            out.push(group);
        }
        return Ok(out);
    }
    if fragments.len() == n {
        return Ok(fragments.iter().map(|f| vec![*f]).collect());
    }
    if let Some(starts_frame) = starts_frame {
        let mut out: Vec<Vec<&[u8]>> = Vec::new();
        for f in fragments {
            match out.last_mut() {
                Some(group) if !starts_frame(f) => group.push(f),
                _ => out.push(vec![f]),
            }
        }
        if out.len() == n {
            return Ok(out);
        }
    }
    Err(corrupt(format!("{} fragments for {n} frames and no usable offset table", fragments.len())))
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
    let corrupt = |detail: &str| DecodeError::DecodePixelData { uid: ts.into(), detail: format!("RLE: {detail}") };
    let u32_at = |i: usize| frame.get(i..i + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let segments = u32_at(0).ok_or_else(|| corrupt("no header"))?;
    if segments != samples * bytes_per_sample || segments > 15 {
        return Err(corrupt("segment count does not match SamplesPerPixel x BitsAllocated"));
    }
    let base = out.len();
    let frame_len = pixels * samples * bytes_per_sample;
    // PackBits expands at most 64 times (2 bytes to 128): a header that asks for more than that
    // is corrupt, and is refused before the frame buffer is zero-filled.
    if frame_len > frame.len().saturating_mul(64) {
        return Err(corrupt("fragment too short for Rows x Columns x SamplesPerPixel"));
    }
    out.resize(base + frame_len, 0);
    let mut decoded = Vec::with_capacity(pixels);
    for s in 0..segments {
        let start = u32_at(4 + 4 * s).ok_or_else(|| corrupt("no header"))?;
        let end = if s + 1 < segments { u32_at(8 + 4 * s).ok_or_else(|| corrupt("no header"))? } else { frame.len() };
        let segment = frame.get(start..end).ok_or_else(|| corrupt("segment offsets out of range"))?;
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
    let corrupt = |detail: String| DecodeError::DecodePixelData { uid: ts.into(), detail };
    let header = jpeg_header(frame).ok_or_else(|| corrupt("not a JPEG stream".into()))?;
    if header.precision != 8 {
        return Err(DecodeError::UnsupportedJpegPrecision { uid: ts.into(), precision: header.precision });
    }
    // jpeg-decoder fills a truncated entropy-coded segment instead of failing; we refuse it.
    if !frame[frame.len().saturating_sub(16)..].windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err(corrupt("JPEG stream has no end-of-image marker (truncated)".into()));
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
    if (u32::from(info.width), u32::from(info.height), components) != (columns, rows, samples) || data.len() != expected {
        return Err(corrupt(format!(
            "JPEG frame is {}x{} with {components} components, the header says {columns}x{rows} with {samples}",
            info.width, info.height
        )));
    }
    out.extend_from_slice(&data);
    Ok(header.adobe && samples == 3)
}

/// One JPEG Lossless frame (Process 14, any predictor, SV1 included; 2 to 16 bits) into `out`
/// as little-endian words of `bytes_per_sample` bytes, pixel-interleaved, as coded (lossless
/// streams carry no colour transform). jpeg-decoder runs inside `catch_unwind`.
pub(crate) fn decode_jpeg_lossless_frame(ts: &str, frame: &[u8], geometry: FrameGeometry, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let corrupt = |detail: String| DecodeError::DecodePixelData { uid: ts.into(), detail };
    let FrameGeometry { rows, columns, samples, bytes_per_sample } = geometry;
    let header = jpeg_header(frame).ok_or_else(|| corrupt("not a JPEG stream".into()))?;
    if !(2..=16).contains(&header.precision) || (header.precision > 8 && bytes_per_sample < 2) {
        return Err(corrupt(format!("JPEG Lossless precision {} with BitsAllocated {}", header.precision, bytes_per_sample * 8)));
    }
    if !frame[frame.len().saturating_sub(16)..].windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err(corrupt("JPEG stream has no end-of-image marker (truncated)".into()));
    }
    let pixels = rows as usize * columns as usize * samples;
    let word = if header.precision > 8 { 2 } else { 1 };
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut decoder = jpeg_decoder::Decoder::new(frame);
        decoder.set_max_decoding_buffer_size((pixels * word).max(1));
        decoder.read_info()?;
        let size = decoder.info().map(|i| (u32::from(i.width), u32::from(i.height)));
        if size != Some((columns, rows)) {
            return Ok((Vec::new(), size));
        }
        decoder.decode().map(|d| (d, size))
    }));
    let (data, size) = match result {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(corrupt(format!("JPEG Lossless: {e}"))),
        Err(_) => return Err(DecodeError::CodecPanicked { uid: ts.into() }),
    };
    if size != Some((columns, rows)) || data.len() != pixels * word {
        return Err(corrupt(format!(
            "JPEG Lossless frame is {size:?} with {} bytes, the header says {columns}x{rows}x{samples}",
            data.len()
        )));
    }
    out.try_reserve(pixels * bytes_per_sample).map_err(|_| DecodeError::Allocate { bytes: (pixels * bytes_per_sample) as u64 })?;
    if word == bytes_per_sample && word == 1 {
        out.extend_from_slice(&data);
    } else {
        // jpeg-decoder gives native-endian u16 for precision > 8, bytes otherwise.
        for i in 0..pixels {
            let v = if word == 2 { u16::from_ne_bytes([data[2 * i], data[2 * i + 1]]) } else { u16::from(data[i]) };
            out.extend_from_slice(&v.to_le_bytes()[..bytes_per_sample.min(2)]);
            out.extend(std::iter::repeat_n(0, bytes_per_sample.saturating_sub(2)));
        }
    }
    Ok(())
}

/// The frame shape the header announces, for the codecs that check their output against it.
#[derive(Clone, Copy)]
pub(crate) struct FrameGeometry {
    pub rows: u32,
    pub columns: u32,
    pub samples: usize,
    pub bytes_per_sample: usize,
}

/// The SIZ facts of a JPEG 2000 codestream (raw or inside a JP2 file).
#[derive(Debug, PartialEq)]
pub(crate) struct J2kSize {
    pub width: u32,
    pub height: u32,
    pub components: u16,
    /// (precision in bits, signed, horizontal subsampling, vertical subsampling) per component.
    pub component_info: Vec<(u8, bool, u8, u8)>,
    pub tiles: u64,
}

/// Reads the SIZ marker segment (PS3.5 A.4.4 / ISO 15444-1 A.5.1) without decoding: the image
/// and tile sizes the decoder would allocate for. `None` when there is no readable SIZ.
pub(crate) fn j2k_size(data: &[u8]) -> Option<J2kSize> {
    // A JP2 file (signature box) carries the codestream in its `jp2c` box.
    let start = if data.get(4..8) == Some(b"jP  ") {
        let mut pos = 0usize;
        loop {
            let len = u32::from_be_bytes(data.get(pos..pos + 4)?.try_into().ok()?) as usize;
            let kind = data.get(pos + 4..pos + 8)?;
            let (header, len) = match len {
                0 => (8, data.len() - pos),
                1 => (16, usize::try_from(u64::from_be_bytes(data.get(pos + 8..pos + 16)?.try_into().ok()?)).ok()?),
                n => (8, n),
            };
            if kind == b"jp2c" {
                break pos + header;
            }
            if len < header {
                return None;
            }
            pos = pos.checked_add(len)?;
        }
    } else {
        0
    };
    let d = data.get(start..)?;
    if d.get(0..4)? != [0xFF, 0x4F, 0xFF, 0x51] {
        return None;
    }
    let be32 = |i: usize| -> Option<u32> { Some(u32::from_be_bytes(d.get(i..i + 4)?.try_into().ok()?)) };
    // FF4F FF51 Lsiz(2) Rsiz(2) Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz(2)
    let (xsiz, ysiz, xo, yo) = (be32(8)?, be32(12)?, be32(16)?, be32(20)?);
    let (xt, yt, xto, yto) = (be32(24)?, be32(28)?, be32(32)?, be32(36)?);
    let components = u16::from_be_bytes([*d.get(40)?, *d.get(41)?]);
    if xsiz <= xo || ysiz <= yo || xt == 0 || yt == 0 || xto > xo || yto > yo {
        return None;
    }
    let tiles = u64::from((xsiz - xto).div_ceil(xt)) * u64::from((ysiz - yto).div_ceil(yt));
    let mut component_info = Vec::new();
    for c in 0..usize::from(components.min(16384)) {
        let at = 42 + 3 * c;
        let s = *d.get(at)?;
        component_info.push(((s & 0x7F) + 1, s & 0x80 != 0, *d.get(at + 1)?, *d.get(at + 2)?));
    }
    Some(J2kSize { width: xsiz - xo, height: ysiz - yo, components, component_info, tiles })
}

/// One JPEG 2000 frame (lossless or lossy; raw codestream or JP2) into `out` as little-endian
/// words of `bytes_per_sample` bytes, pixel-interleaved. The SIZ segment is checked against the
/// header before the decoder allocates anything (size, components, no subsampling, precision
/// at most 16 bits, at most 65535 tiles). A multiple-component transform (YBR_ICT/YBR_RCT) is
/// inverted by the decoder, so colour comes out as RGB. Truncated codestreams (no EOC marker at
/// the end) are refused; the call runs inside `catch_unwind`. Returns whether the
/// codestream's components are signed.
pub(crate) fn decode_j2k_frame(ts: &str, frame: &[u8], geometry: FrameGeometry, out: &mut Vec<u8>) -> Result<bool, DecodeError> {
    let corrupt = |detail: String| DecodeError::DecodePixelData { uid: ts.into(), detail: format!("JPEG 2000: {detail}") };
    let FrameGeometry { rows, columns, samples, bytes_per_sample } = geometry;
    let size = j2k_size(frame).ok_or_else(|| corrupt("no readable SIZ marker segment".into()))?;
    if (size.width, size.height, usize::from(size.components)) != (columns, rows, samples) {
        return Err(corrupt(format!(
            "codestream is {}x{} with {} components, the header says {columns}x{rows} with {samples}",
            size.width, size.height, size.components
        )));
    }
    if size.tiles > 65535 {
        return Err(corrupt(format!("{} tiles", size.tiles)));
    }
    for &(precision, _, dx, dy) in &size.component_info {
        if (dx, dy) != (1, 1) {
            return Err(corrupt("subsampled components".into()));
        }
        if usize::from(precision) > 8 * bytes_per_sample.min(2) {
            return Err(corrupt(format!("precision {precision} with BitsAllocated {}", 8 * bytes_per_sample)));
        }
    }
    // A truncated codestream would be decoded partially: it must end with EOC (0xFFD9),
    // allowing for the padding byte of an even-length fragment.
    if !frame[frame.len().saturating_sub(4)..].windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err(corrupt("codestream has no end-of-codestream marker (truncated)".into()));
    }
    let pixels = rows as usize * columns as usize;
    let result = catch_unwind(AssertUnwindSafe(|| {
        // Not OpenJPEG's strict mode: with it, 2.5.3 decodes pydicom's GDCMJ2K_TextGBR.dcm
        // differently from pylibjpeg-openjpeg (by up to 60 grey levels).
        let image = jpeg2k::Image::from_bytes_with(frame, jpeg2k::DecodeParameters::new()).map_err(|e| e.to_string())?;
        let components = image.components();
        if components.len() != samples || components.iter().any(|c| (c.width(), c.height()) != (columns, rows) || c.data().len() != pixels)
        {
            return Err("decoded components differ from the header".to_string());
        }
        let width = bytes_per_sample.min(4);
        if let [c] = components {
            for v in c.data() {
                out.extend_from_slice(&v.to_le_bytes()[..width]);
            }
        } else {
            for p in 0..pixels {
                for c in components {
                    out.extend_from_slice(&c.data()[p].to_le_bytes()[..width]);
                }
            }
        }
        Ok(())
    }));
    match result {
        Ok(Ok(())) => Ok(size.component_info.iter().all(|c| c.1)),
        Ok(Err(e)) => Err(corrupt(e)),
        Err(_) => Err(DecodeError::CodecPanicked { uid: ts.into() }),
    }
}

/// One 12-bit JPEG Extended (Process 4) frame into `out` as little-endian 16-bit words,
/// pixel-interleaved, as coded (`jpeg12`, ours). Runs inside `catch_unwind` like the others.
pub(crate) fn decode_jpeg12_frame(ts: &str, frame: &[u8], geometry: FrameGeometry, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let corrupt = |detail: String| DecodeError::DecodePixelData { uid: ts.into(), detail: format!("JPEG 12-bit: {detail}") };
    let FrameGeometry { rows, columns, samples, bytes_per_sample } = geometry;
    if bytes_per_sample != 2 {
        return Err(corrupt(format!("BitsAllocated {}", 8 * bytes_per_sample)));
    }
    let pixels = rows as usize * columns as usize;
    let decoded = catch_unwind(AssertUnwindSafe(|| crate::jpeg12::decode(frame, pixels)))
        .map_err(|_| DecodeError::CodecPanicked { uid: ts.into() })?
        .map_err(corrupt)?;
    if (u32::from(decoded.width), u32::from(decoded.height), decoded.components, decoded.precision) != (columns, rows, samples, 12) {
        return Err(corrupt(format!(
            "frame is {}x{} with {} components of {} bits, the header says {columns}x{rows} with {samples} of 12",
            decoded.width, decoded.height, decoded.components, decoded.precision
        )));
    }
    out.extend(decoded.samples.iter().flat_map(|v| v.to_le_bytes()));
    Ok(())
}

/// One JPEG-LS frame (lossless or near-lossless) into `out` as little-endian words of
/// `bytes_per_sample` bytes, pixel-interleaved (`jpegls`, ours). A feature the decoder does not
/// carry (sample interleave, mapping tables) is [`DecodeError::UnsupportedImage`].
pub(crate) fn decode_jpegls_frame(ts: &str, frame: &[u8], geometry: FrameGeometry, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let corrupt = |detail: String| match detail.strip_prefix("unsupported: ") {
        Some(reason) => DecodeError::UnsupportedImage { reason: reason.into() },
        None => DecodeError::DecodePixelData { uid: ts.into(), detail: format!("JPEG-LS: {detail}") },
    };
    let FrameGeometry { rows, columns, samples, bytes_per_sample } = geometry;
    let pixels = rows as usize * columns as usize;
    let decoded = catch_unwind(AssertUnwindSafe(|| crate::jpegls::decode(frame, pixels)))
        .map_err(|_| DecodeError::CodecPanicked { uid: ts.into() })?
        .map_err(corrupt)?;
    if (decoded.width, decoded.height, decoded.components) != (columns, rows, samples) || (decoded.precision > 8 && bytes_per_sample < 2) {
        return Err(corrupt(format!(
            "frame is {}x{} with {} components of {} bits, the header says {columns}x{rows} with {samples} in {} bits",
            decoded.width,
            decoded.height,
            decoded.components,
            decoded.precision,
            8 * bytes_per_sample
        )));
    }
    let width = bytes_per_sample.min(2);
    for v in &decoded.samples {
        out.extend_from_slice(&v.to_le_bytes()[..width]);
        out.extend(std::iter::repeat_n(0, bytes_per_sample - width));
    }
    Ok(())
}
