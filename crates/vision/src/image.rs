//! `GrayImage`: the crate's input type, a single-channel f32 image in [0, 1], row-major.

use crate::Error;

/// A single-channel image, row-major, values in [0, 1] (the service's normalised, letterboxed
/// pixel data). `data.len() == width * height` is checked by [`GrayImage::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct GrayImage {
    width: usize,
    height: usize,
    data: Vec<f32>,
}

impl GrayImage {
    /// Wraps row-major pixels; refuses a length mismatch and non-finite values.
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> Result<Self, Error> {
        if width == 0 || height == 0 || data.len() != width * height {
            return Err(Error::InvalidImage {
                reason: format!("{}x{} image needs {} pixels, got {}", width, height, width * height, data.len()),
            });
        }
        if data.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidImage { reason: "non-finite pixel value".into() });
        }
        Ok(Self { width, height, data })
    }

    /// Copies a row-major slice.
    pub fn from_slice(width: usize, height: usize, data: &[f32]) -> Result<Self, Error> {
        Self::new(width, height, data.to_vec())
    }

    pub fn width(&self) -> usize {
        self.width
    }
    pub fn height(&self) -> usize {
        self.height
    }
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }
    pub fn get(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }
}

/// Box blur with an integral image (edges clamp). Used as the "deleted" content for deletion
/// curves and occlusion: it removes local structure while keeping the overall intensity.
pub fn box_blur(data: &[f32], width: usize, height: usize, radius: usize) -> Vec<f32> {
    let w1 = width + 1;
    let mut integral = vec![0f64; w1 * (height + 1)];
    for y in 0..height {
        let mut row = 0f64;
        for x in 0..width {
            row += data[y * width + x] as f64;
            integral[(y + 1) * w1 + x + 1] = integral[y * w1 + x + 1] + row;
        }
    }
    let mut out = vec![0f32; width * height];
    for y in 0..height {
        let y0 = y.saturating_sub(radius);
        let y1 = (y + radius + 1).min(height);
        for x in 0..width {
            let x0 = x.saturating_sub(radius);
            let x1 = (x + radius + 1).min(width);
            let sum = integral[y1 * w1 + x1] - integral[y0 * w1 + x1] - integral[y1 * w1 + x0] + integral[y0 * w1 + x0];
            out[y * width + x] = (sum / ((y1 - y0) * (x1 - x0)) as f64) as f32;
        }
    }
    out
}

/// Separable square min (`max == false`) or max filter of radius `radius`, clamped at the edges.
fn rank_filter(data: &[f32], width: usize, height: usize, radius: usize, max: bool) -> Vec<f32> {
    let pick = |a: f32, b: f32| if max { a.max(b) } else { a.min(b) };
    let mut tmp = vec![0f32; data.len()];
    for y in 0..height {
        for x in 0..width {
            let row = &data[y * width..(y + 1) * width];
            tmp[y * width + x] = row[x.saturating_sub(radius)..(x + radius + 1).min(width)].iter().copied().reduce(pick).unwrap_or(0.0);
        }
    }
    let mut out = vec![0f32; data.len()];
    for y in 0..height {
        for x in 0..width {
            out[y * width + x] =
                (y.saturating_sub(radius)..(y + radius + 1).min(height)).map(|yy| tmp[yy * width + x]).reduce(pick).unwrap_or(0.0);
        }
    }
    out
}

/// Grey-scale opening (erosion then dilation) with a `(2·radius + 1)²` square: removes bright
/// structures narrower than the square and keeps the darker background under them (the
/// "rolling ball" background estimate of radiography).
pub fn grey_opening(data: &[f32], width: usize, height: usize, radius: usize) -> Vec<f32> {
    rank_filter(&rank_filter(data, width, height, radius, false), width, height, radius, true)
}
