//! The pictures kept with a result, on the display grid: the windowed original and the
//! colour-mapped saliency with alpha from the map (for the app's canvas, so opacity and the
//! overlay toggle work; `results::overlay` blends the two into the overlay for people, cards and
//! the PACS when it is first read); and the raw map on the model's own grid.
//!
//! **Stored at the resolution that carries information.** The model sees its input (96×96 for
//! the shipped model); its saliency map has no finer detail than that grid, so the raw map is
//! kept there (the letterbox geometry in the explanation maps it onto the source). Pictures are
//! for screens: a source larger than [`DISPLAY_MAX_SIDE`] is shrunk by a whole factor (each
//! display pixel the mean of the block it covers), so a 2048×2048 radiograph keeps 1024×1024
//! pictures instead of four full-resolution copies (about 30 MB per result before).

use radsight_dicom::{GrayImage, Letterbox};
use radsight_vision::render::{grayscale_png, viridis_lut};

use crate::results::store::{Artefact, ArtefactKind};

/// The longest side a stored picture may have.
pub const DISPLAY_MAX_SIDE: u32 = 1024;

/// The whole factor that brings a `width`×`height` source within [`DISPLAY_MAX_SIDE`] (1 when it
/// already is).
pub fn display_factor(width: u32, height: u32) -> u32 {
    width.max(height).div_ceil(DISPLAY_MAX_SIDE).max(1)
}

/// Shrinks by a whole factor `k`: each output pixel is the mean of the k×k block it covers (the
/// blocks at the right and bottom edges may be partial and average what they hold).
pub fn shrink(image: &GrayImage, k: u32) -> GrayImage {
    if k <= 1 {
        return image.clone();
    }
    let (w, h) = (image.width() as usize, image.height() as usize);
    let k = k as usize;
    let (dw, dh) = (w.div_ceil(k), h.div_ceil(k));
    let mut sums = vec![0f64; dw * dh];
    let mut counts = vec![0u32; dw * dh];
    for (y, row) in image.data().chunks_exact(w).enumerate() {
        let out = (y / k) * dw;
        for (x, &v) in row.iter().enumerate() {
            sums[out + x / k] += f64::from(v);
            counts[out + x / k] += 1;
        }
    }
    let data = sums.iter().zip(&counts).map(|(s, &n)| (s / f64::from(n)) as f32).collect();
    GrayImage::new(dw as u32, dh as u32, data).expect("the shrunk size matches its data")
}

/// The windowed original on the display grid (`source` shrunk by [`display_factor`]), as the
/// `ImagePng` artefact. It depends on the image only, so [`alongside_picture`] makes it while
/// the model runs.
pub fn picture(source: &GrayImage) -> Result<Artefact, String> {
    let image = shrink(source, display_factor(source.width(), source.height()));
    let (w, h) = (image.width(), image.height());
    let bytes = grayscale_png(image.data(), w as usize, h as usize).map_err(|e| e.to_string())?;
    Ok(Artefact { kind: ArtefactKind::ImagePng, width: w, height: h, bytes })
}

/// Runs `work` (the model) while another thread makes the [`picture`] of `source`: its deflate
/// was about a third of an analysis's CPU for a large radiograph, and the model's small tensor
/// operations leave a core idle much of the time.
pub fn alongside_picture<T>(source: &GrayImage, work: impl FnOnce() -> T) -> (T, Result<Artefact, String>) {
    std::thread::scope(|scope| {
        let picture = scope.spawn(|| picture(source));
        let done = work();
        (done, picture.join().unwrap_or_else(|_| Err("the PNG encoder panicked".into())))
    })
}

/// The artefacts of one analysis: the [`picture`], `display_map` the saliency map on its grid
/// (`Letterbox::map_to_display` with [`display_factor`]), `model_map` the map on the model's
/// input grid. The blended overlay is not among them: `results::overlay` renders it from the
/// image and the heat map when it is first read (its compression was the largest cost on the
/// way to a stored result).
pub fn artefacts(picture: Artefact, display_map: &GrayImage, model_map: &GrayImage) -> Result<Vec<Artefact>, String> {
    let (w, h) = (picture.width, picture.height);
    if (display_map.width(), display_map.height()) != (w, h) {
        return Err(format!("a {}×{} map for a {w}×{h} picture", display_map.width(), display_map.height()));
    }
    let heatmap = heatmap_png(display_map.data(), w, h)?;
    let raw: Vec<u8> = model_map.data().iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok(vec![
        picture,
        Artefact { kind: ArtefactKind::HeatmapPng, width: w, height: h, bytes: heatmap },
        Artefact { kind: ArtefactKind::SaliencyMap, width: model_map.width(), height: model_map.height(), bytes: raw },
    ])
}

/// A segmentation's class map (on the model's `size`×`size` letterboxed grid, row-major) as an
/// 8-bit grayscale PNG on the display grid of a `source_width`×`source_height` source: each
/// display pixel takes the class of the model pixel under its centre (nearest neighbour: a
/// class is a label, never blended). The value is the output channel (0 background).
pub fn class_map_png(
    class_map: &[u8],
    size: usize,
    letterbox: &Letterbox,
    source_width: u32,
    source_height: u32,
) -> Result<Artefact, String> {
    if class_map.len() != size * size {
        return Err(format!("a class map of {} values for a {size}×{size} grid", class_map.len()));
    }
    let k = display_factor(source_width, source_height);
    let (w, h) = (source_width.div_ceil(k), source_height.div_ceil(k));
    let mut values = Vec::with_capacity(w as usize * h as usize);
    for dy in 0..h {
        for dx in 0..w {
            let (sx, sy) = ((f64::from(dx) + 0.5) * f64::from(k), (f64::from(dy) + 0.5) * f64::from(k));
            let (mx, my) = letterbox.to_model_point(sx, sy);
            let (mx, my) = ((mx.floor().max(0.0) as usize).min(size - 1), (my.floor().max(0.0) as usize).min(size - 1));
            values.push(class_map[my * size + mx]);
        }
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&values).map_err(|e| e.to_string())?;
    }
    Ok(Artefact { kind: ArtefactKind::MaskPng, width: w, height: h, bytes: out })
}

/// The heat map: viridis colour of the map value, alpha proportional to it (0 where the map is
/// 0), so the app can draw it over the image at any opacity and toggle it. Colour and alpha are
/// both functions of the 8-bit map value, so it is stored as an indexed PNG (the 256 viridis
/// colours as its palette, alpha `i` for entry `i` in its tRNS chunk): one byte a pixel to
/// compress instead of four, and the same RGBA for every decoder that expands it (browsers do).
pub fn heatmap_png(map: &[f32], width: u32, height: u32) -> Result<Vec<u8>, String> {
    let palette: Vec<u8> = viridis_lut().iter().flatten().copied().collect();
    let alpha: Vec<u8> = (0..=255).collect();
    let indices: Vec<u8> = map.iter().map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Indexed);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_palette(palette);
        encoder.set_trns(alpha);
        encoder.set_compression(png::Compression::Default);
        encoder.set_filter(png::FilterType::Paeth);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&indices).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_sources_shrink_by_a_whole_factor_to_the_display_bound() {
        assert_eq!(display_factor(1024, 800), 1);
        assert_eq!(display_factor(2048, 2048), 2);
        assert_eq!(display_factor(3000, 2500), 3);
        assert_eq!(display_factor(1025, 10), 2);
        for (w, h) in [(2048, 2048), (3000, 2500), (1025, 7)] {
            let k = display_factor(w, h);
            let shrunk = shrink(&GrayImage::new(w, h, vec![0.5; (w * h) as usize]).unwrap(), k);
            assert!(shrunk.width().max(shrunk.height()) <= DISPLAY_MAX_SIDE, "{w}x{h} -> {}x{}", shrunk.width(), shrunk.height());
        }
    }

    #[test]
    fn shrinking_averages_each_block_including_partial_edge_blocks() {
        // 3×2 source, factor 2: blocks {0,1,3,4}, {2,5}.
        let source = GrayImage::new(3, 2, vec![0.0, 1.0, 0.2, 1.0, 0.0, 0.4]).unwrap();
        let shrunk = shrink(&source, 2);
        assert_eq!((shrunk.width(), shrunk.height()), (2, 1));
        assert!((shrunk.data()[0] - 0.5).abs() < 1e-6 && (shrunk.data()[1] - 0.3).abs() < 1e-6, "{:?}", shrunk.data());
    }

    #[test]
    fn the_class_map_goes_to_the_display_grid_by_nearest_neighbour() {
        // A 2048×1024 source letterboxed to 8×8: rows 2..6 of the model grid hold the image.
        let source = GrayImage::new(2048, 1024, vec![0.0; 2048 * 1024]).unwrap();
        let (_, letterbox) = radsight_dicom::letterbox(&source, 8);
        let mut classes = vec![0u8; 64];
        classes[3 * 8 + 6] = 2; // model pixel (6, 3): source x 1536..1792, y 256..512
        let a = class_map_png(&classes, 8, &letterbox, 2048, 1024).unwrap();
        assert_eq!((a.kind, a.width, a.height), (ArtefactKind::MaskPng, 1024, 512));
        let decoder = png::Decoder::new(std::io::Cursor::new(a.bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut buf).unwrap();
        let at = |x: usize, y: usize| buf[y * 1024 + x];
        assert_eq!((at(800, 200), at(767, 200), at(896, 200), at(800, 127), at(800, 256)), (2, 0, 0, 0, 0));
        assert_eq!(buf.iter().filter(|&&v| v == 2).count(), 128 * 128, "one model pixel is a 128×128 block of the display");
        assert!(class_map_png(&classes[..10], 8, &letterbox, 2048, 1024).is_err());
    }

    #[test]
    fn the_heat_map_decodes_to_the_viridis_colour_with_the_map_as_alpha() {
        let map = [0.0f32, 0.25, 0.5, 1.0, f32::NAN, 2.0];
        let png = heatmap_png(&map, 3, 2).unwrap();
        let mut decoder = png::Decoder::new(std::io::Cursor::new(&png));
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info().unwrap();
        let mut rgba = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut rgba).unwrap();
        assert_eq!((info.color_type, info.width, info.height), (png::ColorType::Rgba, 3, 2));
        let lut = viridis_lut();
        for (i, &v) in map.iter().enumerate() {
            let a = if v.is_nan() { 0 } else { (v.clamp(0.0, 1.0) * 255.0).round() as u8 };
            let [r, g, b] = lut[a as usize];
            assert_eq!(&rgba[4 * i..4 * i + 4], &[r, g, b, a], "value {v}");
        }
    }

    #[test]
    fn the_raw_map_is_kept_on_the_model_grid_and_the_pictures_on_the_display_grid() {
        let source = GrayImage::new(2048, 1536, vec![0.25; 2048 * 1536]).unwrap();
        let display_map = GrayImage::new(1024, 768, vec![0.75; 1024 * 768]).unwrap();
        let model_map = GrayImage::new(96, 96, vec![0.75; 96 * 96]).unwrap();
        let stored = artefacts(picture(&source).unwrap(), &display_map, &model_map).unwrap();
        let kinds: Vec<_> = stored.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, [ArtefactKind::ImagePng, ArtefactKind::HeatmapPng, ArtefactKind::SaliencyMap]);
        assert!(artefacts(picture(&source).unwrap(), &model_map, &model_map).is_err(), "a map on another grid is refused");
        for a in &stored {
            match a.kind {
                ArtefactKind::SaliencyMap => assert_eq!((a.width, a.height, a.bytes.len()), (96, 96, 96 * 96 * 4)),
                _ => assert_eq!((a.width, a.height), (1024, 768), "{:?}", a.kind),
            }
        }
    }
}
