//! The pictures kept with a result, all on the source pixel grid: the windowed original, the
//! saliency blended over it (for people and cards), the colour-mapped saliency with alpha from
//! the map (for the app's canvas, so opacity and the overlay toggle work), and the raw map.

use radsight_dicom::GrayImage;
use radsight_vision::render::{OverlayOptions, grayscale_png, overlay_png, viridis_lut};

use crate::results::store::{Artefact, ArtefactKind};

pub fn artefacts(source: &GrayImage, map: &GrayImage) -> Result<Vec<Artefact>, String> {
    let (w, h) = (source.width(), source.height());
    let (wu, hu) = (w as usize, h as usize);
    let image = grayscale_png(source.data(), wu, hu).map_err(|e| e.to_string())?;
    let overlay = overlay_png(source.data(), map.data(), wu, hu, OverlayOptions::default()).map_err(|e| e.to_string())?;
    let heatmap = heatmap_png(map.data(), w, h)?;
    let raw: Vec<u8> = map.data().iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok(vec![
        Artefact { kind: ArtefactKind::ImagePng, width: w, height: h, bytes: image },
        Artefact { kind: ArtefactKind::SaliencyPng, width: w, height: h, bytes: overlay },
        Artefact { kind: ArtefactKind::HeatmapPng, width: w, height: h, bytes: heatmap },
        Artefact { kind: ArtefactKind::SaliencyMap, width: w, height: h, bytes: raw },
    ])
}

/// RGBA PNG: viridis colour of the map value, alpha proportional to it (0 where the map is 0),
/// so the app can draw it over the image at any opacity and toggle it.
pub fn heatmap_png(map: &[f32], width: u32, height: u32) -> Result<Vec<u8>, String> {
    let lut = viridis_lut();
    let mut rgba = Vec::with_capacity(map.len() * 4);
    for &v in map {
        let v = v.clamp(0.0, 1.0);
        let [r, g, b] = lut[(v * 255.0).round() as usize];
        rgba.extend_from_slice(&[r, g, b, (v * 255.0).round() as u8]);
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&rgba).map_err(|e| e.to_string())?;
    }
    Ok(out)
}
