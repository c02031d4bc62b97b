//! PNG rendering: a plain grayscale encoder and the viridis colour map. The service makes its
//! heat map and blends its overlay itself (`analysis::render`, `results::overlay`), from pictures
//! it stores.

use crate::error::Error;

/// Viridis as a 256-entry RGB lookup table, from Matt Zucker's degree-6 polynomial fit of
/// matplotlib's viridis (public domain; max error about 1/255 against the original table).
/// Viridis is perceptually uniform and readable with the common colour-vision deficiencies.
pub fn viridis_lut() -> [[u8; 3]; 256] {
    const C: [[f64; 3]; 7] = [
        [0.277_727_327_223_417_7, 0.005_407_344_544_966_578, 0.334_099_805_335_306_1],
        [0.105_093_043_108_577_4, 1.404_613_529_898_575, 1.384_590_162_594_685],
        [-0.330_861_828_725_556_3, 0.214_847_559_468_213, 0.095_095_163_028_236_59],
        [-4.634_230_498_983_486, -5.799_100_973_351_585, -19.332_440_956_279_87],
        [6.228_269_936_347_081, 14.179_933_366_805_09, 56.690_552_600_681_05],
        [4.776_384_997_670_288, -13.745_145_377_746_01, -65.353_032_633_372_34],
        [-5.435_455_855_934_631, 4.645_852_612_178_535, 26.312_435_249_583_2],
    ];
    let mut lut = [[0u8; 3]; 256];
    for (i, entry) in lut.iter_mut().enumerate() {
        let t = i as f64 / 255.0;
        for ch in 0..3 {
            let mut v = C[6][ch];
            for k in (0..6).rev() {
                v = C[k][ch] + t * v;
            }
            entry[ch] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    lut
}

fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

fn encode(width: usize, height: usize, color: png::ColorType, data: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        // Stored with every result: smaller beats faster here (a 1024² overlay takes tens of
        // milliseconds either way).
        enc.set_compression(png::Compression::Default);
        enc.set_filter(png::FilterType::Paeth);
        let mut writer = enc.write_header().map_err(Error::EncodePng)?;
        writer.write_image_data(data).map_err(Error::EncodePng)?;
    }
    Ok(out)
}

fn check_len(what: &str, len: usize, width: usize, height: usize) -> Result<(), Error> {
    if width == 0 || height == 0 || len != width * height {
        return Err(Error::InvalidImage { reason: format!("{what}: {len} values for {width}x{height}") });
    }
    Ok(())
}

/// 8-bit grayscale PNG of row-major values in [0, 1] (clamped).
pub fn grayscale_png(data: &[f32], width: usize, height: usize) -> Result<Vec<u8>, Error> {
    check_len("grayscale image", data.len(), width, height)?;
    let bytes: Vec<u8> = data.iter().map(|&v| to_u8(v)).collect();
    encode(width, height, png::ColorType::Grayscale, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_runs_from_dark_purple_to_yellow() {
        let lut = viridis_lut();
        // matplotlib viridis: #440154 at 0, #21918c near 0.5, #fde725 at 1.
        let near = |a: [u8; 3], b: [u8; 3]| a.iter().zip(b).all(|(x, y)| (*x as i32 - y as i32).abs() <= 4);
        assert!(near(lut[0], [0x44, 0x01, 0x54]), "{:?}", lut[0]);
        assert!(near(lut[128], [0x21, 0x91, 0x8c]), "{:?}", lut[128]);
        assert!(near(lut[255], [0xfd, 0xe7, 0x25]), "{:?}", lut[255]);
    }

    #[test]
    fn encoders_refuse_a_size_mismatch_and_emit_png_signatures() {
        assert!(grayscale_png(&[0.0; 5], 2, 2).is_err());
        let png = grayscale_png(&[0.0, 0.5, 1.0, 0.25], 2, 2).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}
