//! `GrayImage` (single-channel f32) and the letterbox to a square model input and back.
//!
//! Coordinates are continuous: pixel (i, j) covers [i, i+1) x [j, j+1), its centre is at
//! (i + 0.5, j + 0.5). The resize is Pillow's `Image.resize(..., BILINEAR)`: a separable triangle
//! filter on pixel centres, widened by the scale factor when shrinking, so downscaling averages
//! (antialiased) instead of skipping pixels, and upscaling is plain bilinear.

use std::io;

/// A single-channel f32 image, row-major. `data.len() == width * height` always holds.
#[derive(Debug, Clone, PartialEq)]
pub struct GrayImage {
    width: u32,
    height: u32,
    data: Vec<f32>,
}

impl GrayImage {
    /// `None` unless `data.len() == width * height` and both are > 0.
    pub fn new(width: u32, height: u32, data: Vec<f32>) -> Option<Self> {
        let n = (width as usize).checked_mul(height as usize)?;
        (n > 0 && data.len() == n).then_some(GrayImage { width, height, data })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// The value at column `x`, row `y`.
    pub fn get(&self, x: u32, y: u32) -> Option<f32> {
        if x >= self.width || y >= self.height {
            return None;
        }
        self.data.get(y as usize * self.width as usize + x as usize).copied()
    }

    /// An 8-bit grey PNG: each value clamped to [0, 1], times 255, rounded.
    pub fn to_png_gray8(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, self.width, self.height);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(io::Error::other)?;
        let bytes: Vec<u8> = self.data.iter().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
        writer.write_image_data(&bytes).map_err(io::Error::other)?;
        writer.finish().map_err(io::Error::other)?;
        Ok(out)
    }

    /// Resizes to `width` x `height` (each at least 1) with the Pillow BILINEAR filter.
    pub fn resize(&self, width: u32, height: u32) -> GrayImage {
        let (width, height) = (width.max(1), height.max(1));
        let horizontal = Weights::new(self.width, width);
        let vertical = Weights::new(self.height, height);
        let (sw, tw) = (self.width as usize, width as usize);
        // Rows first (source height x target width), then columns.
        let mut tmp = vec![0f32; self.height as usize * tw];
        for y in 0..self.height as usize {
            let row = &self.data[y * sw..(y + 1) * sw];
            for (x, (start, w)) in horizontal.taps.iter().enumerate() {
                tmp[y * tw + x] = w.iter().zip(&row[*start..]).map(|(w, v)| w * f64::from(*v)).sum::<f64>() as f32;
            }
        }
        let mut data = vec![0f32; height as usize * tw];
        for (y, (start, w)) in vertical.taps.iter().enumerate() {
            for x in 0..tw {
                data[y * tw + x] = w.iter().enumerate().map(|(k, w)| w * f64::from(tmp[(start + k) * tw + x])).sum::<f64>() as f32;
            }
        }
        GrayImage { width, height, data }
    }

    /// Bilinear sample at continuous coordinates (pixel centres at +0.5), clamped to the edges.
    fn sample(&self, x: f64, y: f64) -> f32 {
        let fx = (x - 0.5).clamp(0.0, f64::from(self.width - 1));
        let fy = (y - 0.5).clamp(0.0, f64::from(self.height - 1));
        let (x0, y0) = (fx.floor() as u32, fy.floor() as u32);
        let (x1, y1) = ((x0 + 1).min(self.width - 1), (y0 + 1).min(self.height - 1));
        let (ax, ay) = ((fx - f64::from(x0)) as f32, (fy - f64::from(y0)) as f32);
        let at = |x: u32, y: u32| self.data[y as usize * self.width as usize + x as usize];
        let top = at(x0, y0) * (1.0 - ax) + at(x1, y0) * ax;
        let bottom = at(x0, y1) * (1.0 - ax) + at(x1, y1) * ax;
        top * (1.0 - ay) + bottom * ay
    }
}

/// Per output index: the first input index and the normalised weights (Pillow's precompute_coeffs).
struct Weights {
    taps: Vec<(usize, Vec<f64>)>,
}

impl Weights {
    fn new(input: u32, output: u32) -> Self {
        let scale = f64::from(input) / f64::from(output);
        let filter_scale = scale.max(1.0);
        let support = filter_scale; // triangle filter: support 1, widened when shrinking
        let taps = (0..output)
            .map(|i| {
                let center = (f64::from(i) + 0.5) * scale;
                let min = ((center - support + 0.5).floor().max(0.0)) as usize;
                let max = ((center + support + 0.5).floor() as usize).min(input as usize).max(min + 1);
                let mut w: Vec<f64> =
                    (min..max).map(|x| ((x as f64 - center + 0.5) / filter_scale).abs()).map(|d| (1.0 - d).max(0.0)).collect();
                let sum: f64 = w.iter().sum();
                if sum > 0.0 {
                    w.iter_mut().for_each(|v| *v /= sum);
                } else {
                    w.iter_mut().for_each(|v| *v = 0.0);
                    w[0] = 1.0;
                }
                (min.min(input as usize - 1), w)
            })
            .collect();
        Weights { taps }
    }
}

/// Where the source image sits inside the square model input, and the maps between the two.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Side of the square model input.
    pub size: u32,
    pub source_width: u32,
    pub source_height: u32,
    /// The source resized to this, preserving aspect ratio (each side at least 1).
    pub scaled_width: u32,
    pub scaled_height: u32,
    /// Left and top padding in model pixels (padding is 0.0, black).
    pub pad_x: u32,
    pub pad_y: u32,
    /// `min(size / source_width, size / source_height)`; the exact per-axis factors are
    /// `scaled_width / source_width` and `scaled_height / source_height`.
    pub scale: f64,
}

/// An axis-aligned box in continuous pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelBox {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

/// The model-size map given to [`Letterbox::map_to_source`] is not `size` x `size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("map is {width}x{height}, the letterbox expects {size}x{size}")]
pub struct MapSizeMismatch {
    pub width: u32,
    pub height: u32,
    pub size: u32,
}

/// Resizes `image` into a `size` x `size` square (size 0 counts as 1), preserving aspect ratio
/// and centring it with black (0.0) padding.
pub fn letterbox(image: &GrayImage, size: u32) -> (GrayImage, Letterbox) {
    let size = size.max(1);
    let (w, h) = (image.width, image.height);
    let scale = (f64::from(size) / f64::from(w)).min(f64::from(size) / f64::from(h));
    let scaled = |side: u32| ((f64::from(side) * scale).round() as u32).clamp(1, size);
    let (sw, sh) = (scaled(w), scaled(h));
    let geometry = Letterbox {
        size,
        source_width: w,
        source_height: h,
        scaled_width: sw,
        scaled_height: sh,
        pad_x: (size - sw) / 2,
        pad_y: (size - sh) / 2,
        scale,
    };
    let resized = image.resize(sw, sh);
    let mut data = vec![0f32; size as usize * size as usize];
    for y in 0..sh as usize {
        let dst = (y + geometry.pad_y as usize) * size as usize + geometry.pad_x as usize;
        data[dst..dst + sw as usize].copy_from_slice(&resized.data[y * sw as usize..(y + 1) * sw as usize]);
    }
    (GrayImage { width: size, height: size, data }, geometry)
}

impl Letterbox {
    fn factors(&self) -> (f64, f64) {
        (f64::from(self.scaled_width) / f64::from(self.source_width), f64::from(self.scaled_height) / f64::from(self.source_height))
    }

    /// A model-input point to source pixel coordinates (not clamped: padding maps outside).
    pub fn to_source_point(&self, x: f64, y: f64) -> (f64, f64) {
        let (fx, fy) = self.factors();
        ((x - f64::from(self.pad_x)) / fx, (y - f64::from(self.pad_y)) / fy)
    }

    /// A source point to model-input coordinates.
    pub fn to_model_point(&self, x: f64, y: f64) -> (f64, f64) {
        let (fx, fy) = self.factors();
        (x * fx + f64::from(self.pad_x), y * fy + f64::from(self.pad_y))
    }

    /// A model-input box to source pixel coordinates, clamped to the source image.
    pub fn to_source_box(&self, b: PixelBox) -> PixelBox {
        let (x0, y0) = self.to_source_point(b.x0, b.y0);
        let (x1, y1) = self.to_source_point(b.x1, b.y1);
        let (w, h) = (f64::from(self.source_width), f64::from(self.source_height));
        PixelBox { x0: x0.clamp(0.0, w), y0: y0.clamp(0.0, h), x1: x1.clamp(0.0, w), y1: y1.clamp(0.0, h) }
    }

    /// Maps a `size` x `size` map (e.g. a saliency map on the model input) onto the source grid:
    /// each source pixel centre is mapped into model coordinates and the map sampled bilinearly
    /// there (clamped at the map's edges). The padding never contributes except through the one
    /// bilinear neighbour at the content border.
    pub fn map_to_source(&self, map: &GrayImage) -> Result<GrayImage, MapSizeMismatch> {
        if map.width != self.size || map.height != self.size {
            return Err(MapSizeMismatch { width: map.width, height: map.height, size: self.size });
        }
        let (w, h) = (self.source_width, self.source_height);
        let mut data = Vec::with_capacity(w as usize * h as usize);
        for y in 0..h {
            for x in 0..w {
                let (mx, my) = self.to_model_point(f64::from(x) + 0.5, f64::from(y) + 0.5);
                data.push(map.sample(mx, my));
            }
        }
        Ok(GrayImage { width: w, height: h, data })
    }

    /// Maps a `size` x `size` map onto the source grid shrunk by the whole factor `factor`
    /// (`ceil(w / factor)` x `ceil(h / factor)`, the grid of pictures made by averaging each
    /// `factor`² block of source pixels): each output pixel samples the map bilinearly at the
    /// centre of the source block it covers (a partial block at the right or bottom edge at the
    /// centre of what it holds). For a map upsampled from a model grid several times coarser,
    /// this is [`Letterbox::map_to_source`] followed by the block mean, without the source-sized
    /// map in between (16 MiB for a 2048² radiograph).
    pub fn map_to_display(&self, map: &GrayImage, factor: u32) -> Result<GrayImage, MapSizeMismatch> {
        if map.width != self.size || map.height != self.size {
            return Err(MapSizeMismatch { width: map.width, height: map.height, size: self.size });
        }
        let k = factor.max(1);
        let (w, h) = (self.source_width, self.source_height);
        let (dw, dh) = (w.div_ceil(k), h.div_ceil(k));
        let centre = |i: u32, extent: u32| f64::from(i * k + ((i + 1) * k).min(extent)) / 2.0;
        let mut data = Vec::with_capacity(dw as usize * dh as usize);
        for dy in 0..dh {
            let cy = centre(dy, h);
            for dx in 0..dw {
                let (mx, my) = self.to_model_point(centre(dx, w), cy);
                data.push(map.sample(mx, my));
            }
        }
        Ok(GrayImage { width: dw, height: dh, data })
    }
}
