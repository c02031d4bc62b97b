//! The pictures kept with a result, all on the source pixel grid: the windowed original, the
//! saliency blended over it (for people and cards), the colour-mapped saliency with alpha from
//! the map (for the app's canvas, so opacity and the overlay toggle work), and the raw map.

use radsight_dicom::GrayImage;
use radsight_vision::render::{OverlayOptions, grayscale_png, heatmap_png, overlay_png};

use crate::results::store::{Artefact, ArtefactKind};

pub fn artefacts(source: &GrayImage, map: &GrayImage) -> Result<Vec<Artefact>, String> {
    let (w, h) = (source.width(), source.height());
    let (wu, hu) = (w as usize, h as usize);
    let image = grayscale_png(source.data(), wu, hu).map_err(|e| e.to_string())?;
    let overlay = overlay_png(source.data(), map.data(), wu, hu, OverlayOptions::default()).map_err(|e| e.to_string())?;
    let heatmap = heatmap_png(map.data(), wu, hu).map_err(|e| e.to_string())?;
    let raw: Vec<u8> = map.data().iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok(vec![
        Artefact { kind: ArtefactKind::ImagePng, width: w, height: h, bytes: image },
        Artefact { kind: ArtefactKind::SaliencyPng, width: w, height: h, bytes: overlay },
        Artefact { kind: ArtefactKind::HeatmapPng, width: w, height: h, bytes: heatmap },
        Artefact { kind: ArtefactKind::SaliencyMap, width: w, height: h, bytes: raw },
    ])
}
