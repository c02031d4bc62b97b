//! The saliency overlay for people (the card's picture, the app's "saliency.png", the PACS
//! Secondary Capture): the colour map blended over the windowed original, rendered when first
//! asked for and then kept.
//!
//! **Why not at analysis time.** An RGB overlay of a 1024² display grid is the largest picture
//! a result has (about 0.9 MB) and its compression was the largest single cost between a study's
//! arrival and its stored result. It adds no information: it is a pure function of two pictures
//! stored with every result, `image-png` (the windowed original) and `heatmap-png` (viridis of
//! the map, alpha = the map), on the same display grid. So the worker stores those two, and the
//! overlay is blended from them on the first read and cached as the `saliency-png` artefact
//! (results stored before 2026-12-03 already hold one, which is served as stored).
//!
//! The blend is the one the analysis used before (opacity 0.45 × the map value, nothing below
//! 0.2; it was `radsight_vision::render::overlay_png`, removed once this was its only form), so a
//! cached overlay equals one rendered at analysis time up to the 8-bit quantisation of the map in
//! the heatmap's alpha (within 1 of 255 per channel).

use sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel};
use sha2::{Digest, Sha256};

use super::store::{self, ArtefactKind};
use crate::store::entities::result_artefact;

/// Opacity of the colour at map value 1 (scaled with the value).
const ALPHA: f32 = 0.45;
/// Map values below this stay uncoloured, so the anatomy stays readable.
const MIN_VALUE: f32 = 0.2;

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("reading the result's pictures: {0}")]
    Read(#[from] DbErr),
    #[error("the stored {kind} picture cannot be read: {detail}")]
    Picture { kind: &'static str, detail: String },
    #[error("the stored image is {image:?} and the heat map {heatmap:?}: not the same grid")]
    Mismatch { image: (u32, u32), heatmap: (u32, u32) },
    #[error("encoding the overlay: {0}")]
    Encode(String),
    #[error("the overlay render stopped: {0}")]
    Join(String),
}

/// The overlay of result `id`: the stored one, or blended from the result's image and heat map
/// and stored for the next reader. `None` when the result has no heat map (a result without a
/// saliency map, or one that failed).
pub async fn saliency_png<C: ConnectionTrait>(conn: &C, id: &str) -> Result<Option<result_artefact::Model>, OverlayError> {
    if let Some(stored) = store::artefact(conn, id, ArtefactKind::SaliencyPng).await? {
        return Ok(Some(stored));
    }
    let (Some(image), Some(heatmap)) =
        (store::artefact(conn, id, ArtefactKind::ImagePng).await?, store::artefact(conn, id, ArtefactKind::HeatmapPng).await?)
    else {
        return Ok(None);
    };
    // Tens of milliseconds of pixel work and deflate: off the async workers.
    let bytes =
        tokio::task::spawn_blocking(move || blend(&image.bytes, &heatmap.bytes)).await.map_err(|e| OverlayError::Join(e.to_string()))??;
    let row = result_artefact::Model {
        result_id: id.to_owned(),
        kind: ArtefactKind::SaliencyPng.as_str().to_owned(),
        media_type: ArtefactKind::SaliencyPng.media_type().to_owned(),
        width: bytes.width as i32,
        height: bytes.height as i32,
        sha256: hex::encode(Sha256::digest(&bytes.png)),
        bytes: bytes.png,
        created_at: time::OffsetDateTime::now_utc().unix_timestamp(),
    };
    // Two readers may render at once (another instance, the outbox and the app): the first
    // stored wins and both serve the same pixels, so a conflict is not an error.
    let active = row.clone().into_active_model().reset_all();
    result_artefact::Entity::insert(active).on_conflict_do_nothing().exec_without_returning(conn).await?;
    Ok(Some(row))
}

/// A blended overlay: RGB PNG bytes and its size.
pub struct Overlay {
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Blends the RGBA heat map over the grayscale image (both PNG, same size) into an RGB PNG.
pub fn blend(image_png: &[u8], heatmap_png: &[u8]) -> Result<Overlay, OverlayError> {
    let (gray, (w, h)) = read_png(image_png, png::ColorType::Grayscale, "image")?;
    let (rgba, heat_size) = read_png(heatmap_png, png::ColorType::Rgba, "heat map")?;
    if heat_size != (w, h) {
        return Err(OverlayError::Mismatch { image: (w, h), heatmap: heat_size });
    }
    let mut rgb = Vec::with_capacity(gray.len() * 3);
    for (&g, px) in gray.iter().zip(rgba.chunks_exact(4)) {
        let g = f32::from(g) / 255.0;
        let m = f32::from(px[3]) / 255.0;
        let a = if m >= MIN_VALUE { ALPHA * m } else { 0.0 };
        for &c in &px[..3] {
            rgb.push(((1.0 - a) * g * 255.0 + a * f32::from(c)).round().clamp(0.0, 255.0) as u8);
        }
    }
    let mut png = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Default);
        encoder.set_filter(png::FilterType::Paeth);
        let mut writer = encoder.write_header().map_err(|e| OverlayError::Encode(e.to_string()))?;
        writer.write_image_data(&rgb).map_err(|e| OverlayError::Encode(e.to_string()))?;
    }
    Ok(Overlay { png, width: w, height: h })
}

/// An 8-bit PNG that decodes to the expected colour type (palettes expanded: the heat map is
/// indexed, with alpha in its tRNS chunk; results from before 2026-12-03 hold it as RGBA): its
/// samples and size.
fn read_png(bytes: &[u8], color: png::ColorType, kind: &'static str) -> Result<(Vec<u8>, (u32, u32)), OverlayError> {
    let bad = |detail: String| OverlayError::Picture { kind, detail };
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(|e| bad(e.to_string()))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(|e| bad(e.to_string()))?;
    if info.color_type != color || info.bit_depth != png::BitDepth::Eight {
        return Err(bad(format!("{:?} {:?}, expected {color:?} 8-bit", info.color_type, info.bit_depth)));
    }
    buf.truncate(info.buffer_size());
    Ok((buf, (info.width, info.height)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(w: u32, h: u32, color: png::ColorType, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.write_header().unwrap().write_image_data(data).unwrap();
        out
    }

    #[test]
    fn the_heat_map_colours_the_image_in_proportion_to_the_map_above_the_floor() {
        // Three pixels of grey 100: map 0 (untouched), 0.1 (below the floor: untouched), 1.0
        // (45 % of the colour (253, 231, 37) over the grey).
        let image = encode(3, 1, png::ColorType::Grayscale, &[100, 100, 100]);
        let heat = encode(3, 1, png::ColorType::Rgba, &[68, 1, 84, 0, 70, 10, 90, 26, 253, 231, 37, 255]);
        let overlay = blend(&image, &heat).unwrap();
        let (rgb, size) = read_png(&overlay.png, png::ColorType::Rgb, "overlay").unwrap();
        assert_eq!(size, (3, 1));
        let mix = |c: f32| (0.55f32 * 100.0 + 0.45 * c).round() as u8;
        assert_eq!(rgb, vec![100, 100, 100, 100, 100, 100, mix(253.0), mix(231.0), mix(37.0)]);
    }

    #[test]
    fn an_indexed_heat_map_with_alpha_in_trns_blends_like_its_rgba_form() {
        let image = encode(2, 1, png::ColorType::Grayscale, &[100, 100]);
        let rgba = encode(2, 1, png::ColorType::Rgba, &[68, 1, 84, 0, 253, 231, 37, 255]);
        let mut indexed = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut indexed, 2, 1);
            encoder.set_color(png::ColorType::Indexed);
            encoder.set_depth(png::BitDepth::Eight);
            encoder.set_palette(vec![68, 1, 84, 253, 231, 37]);
            encoder.set_trns(vec![0, 255]);
            encoder.write_header().unwrap().write_image_data(&[0, 1]).unwrap();
        }
        let pixels = |heat: &[u8]| read_png(&blend(&image, heat).unwrap().png, png::ColorType::Rgb, "overlay").unwrap().0;
        assert_eq!(pixels(&indexed), pixels(&rgba));
        assert_ne!(&pixels(&indexed)[3..], &[100, 100, 100], "the opaque entry colours its pixel");
    }

    #[test]
    fn pictures_of_other_sizes_or_kinds_are_refused() {
        let image = encode(2, 1, png::ColorType::Grayscale, &[0, 0]);
        let heat = encode(1, 1, png::ColorType::Rgba, &[0, 0, 0, 0]);
        assert!(matches!(blend(&image, &heat), Err(OverlayError::Mismatch { .. })));
        assert!(matches!(blend(&heat, &heat), Err(OverlayError::Picture { kind: "image", .. })));
        assert!(matches!(blend(b"not a png", &heat), Err(OverlayError::Picture { kind: "image", .. })));
    }
}
