//! A minimal PNG encoder (8-bit grayscale or RGBA, stored deflate blocks: no compression) for
//! the demo EHR's synthetic study and the tests' seeded results. The real artefacts come from
//! the vision pipeline; this only has to produce valid PNGs, not small ones.

/// Colour type of the encoded image.
#[derive(Debug, Clone, Copy)]
pub enum ColorType {
    Gray8,
    Rgba8,
}

fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for part in parts {
        for &b in *part {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { 0xedb8_8320 ^ (crc >> 1) } else { crc >> 1 };
            }
        }
    }
    !crc
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
}

/// Encodes `pixels` (row-major, 1 or 4 bytes per pixel) as a PNG.
///
/// # Panics
/// When `pixels` does not hold exactly `width × height` pixels of `color`.
pub fn encode(width: u32, height: u32, color: ColorType, pixels: &[u8]) -> Vec<u8> {
    let (bpp, code) = match color {
        ColorType::Gray8 => (1usize, 0u8),
        ColorType::Rgba8 => (4, 6),
    };
    let row = width as usize * bpp;
    assert_eq!(pixels.len(), row * height as usize, "pixel buffer size does not match the image");
    // Scanlines, each with filter type 0.
    let mut raw = Vec::with_capacity((row + 1) * height as usize);
    for line in pixels.chunks(row.max(1)).take(height as usize) {
        raw.push(0);
        raw.extend_from_slice(line);
    }
    // zlib stream of stored blocks (RFC 1950/1951) with its Adler-32.
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = if raw.is_empty() { vec![&[][..]] } else { raw.chunks(65_535).collect() };
    for (i, block) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + byte as u32) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());

    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, code, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_iend_is_the_well_known_value() {
        assert_eq!(crc32(&[b"IEND"]), 0xae42_6082);
    }

    #[test]
    fn a_png_has_signature_header_and_end() {
        let png = encode(2, 2, ColorType::Gray8, &[0, 64, 128, 255]);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
    }
}
