//! Deterministic synthetic chest-radiograph-like phantoms with known lesion masks.
//!
//! Each phantom is a function of `(seed, index)` only: the generator draws from
//! `Pcg32::new(seed, index)`, so datasets are reproducible, splits with different seeds are
//! disjoint in practice, and any single image can be regenerated from its index.
//!
//! The scene (coordinates relative to the image side): dark air outside an elliptical body of
//! soft tissue; two darker lung fields; a brighter mediastinum/heart shadow and spine; rib-like
//! arcs over the lungs; smooth low-frequency texture; Gaussian noise. Findings:
//! - `nodule`: a small round opacity (sphere projection), radius and contrast varied, placed in
//!   a lung field. Mask: the disc.
//! - `consolidation`: an irregular patch made of 3–5 overlapping soft blobs in a lung field.
//!   Mask: where the added opacity exceeds 30% of its peak.
//!
//! These are demonstration data: they resemble a radiograph only loosely and say nothing about
//! performance on real images.

use crate::image::GrayImage;
use crate::rng::Pcg32;
use serde::{Deserialize, Serialize};

/// The phantom's finding labels, in model output order.
pub const PHANTOM_LABELS: [&str; 2] = ["nodule", "consolidation"];

/// Generator settings. Defaults are those used to train `radsight-phantom-cxr` 1.0.0 and 1.1.0.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhantomConfig {
    /// Image side in pixels (square).
    pub size: usize,
    /// Probability that each finding is present (independently).
    pub p_nodule: f32,
    pub p_consolidation: f32,
    /// Nodule radius range, as a fraction of the image side.
    pub nodule_radius: (f32, f32),
    /// Nodule peak contrast range (added intensity).
    pub nodule_contrast: (f32, f32),
    /// Consolidation blob radius range (fraction of side) and contrast range.
    pub consolidation_radius: (f32, f32),
    pub consolidation_contrast: (f32, f32),
    /// Standard deviation range of the additive Gaussian noise.
    pub noise_sigma: (f32, f32),
}

impl Default for PhantomConfig {
    fn default() -> Self {
        Self {
            size: 96,
            p_nodule: 0.5,
            p_consolidation: 0.5,
            nodule_radius: (0.035, 0.08),
            nodule_contrast: (0.14, 0.34),
            consolidation_radius: (0.06, 0.12),
            consolidation_contrast: (0.10, 0.25),
            noise_sigma: (0.015, 0.035),
        }
    }
}

/// One generated phantom: the image, the ground-truth labels (in [`PHANTOM_LABELS`] order) and a
/// mask per label (row-major, `true` inside the finding; all `false` when absent).
#[derive(Debug, Clone, PartialEq)]
pub struct Phantom {
    pub image: GrayImage,
    pub labels: Vec<bool>,
    pub masks: Vec<Vec<bool>>,
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

struct Ellipse {
    cx: f32,
    cy: f32,
    rx: f32,
    ry: f32,
}

impl Ellipse {
    /// Normalised radius: < 1 inside.
    fn rho(&self, u: f32, v: f32) -> f32 {
        (((u - self.cx) / self.rx).powi(2) + ((v - self.cy) / self.ry).powi(2)).sqrt()
    }
    /// 1 inside, 0 outside, soft edge of relative width `soft`.
    fn inside(&self, u: f32, v: f32, soft: f32) -> f32 {
        1.0 - smoothstep(1.0 - soft, 1.0 + soft, self.rho(u, v))
    }
    /// A random point well inside the ellipse.
    fn sample(&self, rng: &mut Pcg32, margin: f32) -> (f32, f32) {
        let r = margin * rng.uniform().sqrt();
        let t = rng.range(0.0, std::f32::consts::TAU);
        (self.cx + r * self.rx * t.cos(), self.cy + r * self.ry * t.sin())
    }
}

/// Generates phantom number `index` of the dataset identified by `seed`.
pub fn generate(config: &PhantomConfig, seed: u64, index: u64) -> Phantom {
    let mut rng = Pcg32::new(seed, index);
    let n = config.size;
    let s = n as f32;

    // Anatomy.
    let body = Ellipse {
        cx: 0.5 + rng.range(-0.03, 0.03),
        cy: 0.56 + rng.range(-0.03, 0.03),
        rx: rng.range(0.40, 0.47),
        ry: rng.range(0.46, 0.52),
    };
    let lung_dy = rng.range(-0.03, 0.03);
    let lungs = [
        Ellipse { cx: 0.31 + rng.range(-0.02, 0.02), cy: 0.47 + lung_dy, rx: rng.range(0.13, 0.17), ry: rng.range(0.26, 0.32) },
        Ellipse { cx: 0.69 + rng.range(-0.02, 0.02), cy: 0.47 + lung_dy, rx: rng.range(0.13, 0.17), ry: rng.range(0.26, 0.32) },
    ];
    let heart = Ellipse {
        cx: 0.53 + rng.range(-0.02, 0.02),
        cy: 0.66 + rng.range(-0.02, 0.02),
        rx: rng.range(0.12, 0.16),
        ry: rng.range(0.10, 0.13),
    };
    let tissue = rng.range(0.50, 0.62);
    let lung_level = rng.range(0.18, 0.30);
    let rib_contrast = rng.range(0.05, 0.10);
    let rib_start = rng.range(0.20, 0.26);
    let rib_gap = rng.range(0.065, 0.08);
    let rib_curve = rng.range(0.8, 1.4);
    let waves: Vec<(f32, f32, f32, f32)> =
        (0..4).map(|_| (rng.range(1.0, 4.0), rng.range(1.0, 4.0), rng.range(0.0, std::f32::consts::TAU), rng.range(0.005, 0.02))).collect();

    let mut img = vec![0f32; n * n];
    for y in 0..n {
        let v = (y as f32 + 0.5) / s;
        for x in 0..n {
            let u = (x as f32 + 0.5) / s;
            let in_body = body.inside(u, v, 0.03);
            let in_lung = lungs[0].inside(u, v, 0.08).max(lungs[1].inside(u, v, 0.08));
            let mut val = 0.04 + in_body * (tissue - 0.04);
            val -= in_lung * (tissue - lung_level);
            // Mediastinum and heart shadow, spine.
            val += in_body * 0.6 * heart.inside(u, v, 0.15) * (tissue - lung_level);
            val += in_body * 0.10 * (1.0 - smoothstep(0.02, 0.04, (u - body.cx).abs()));
            // Ribs: arcs v = v0 + k·gap + curve·(u − side centre)², within the lung band.
            let mut rib = 0f32;
            for lung in &lungs {
                if (u < 0.5) != (lung.cx < 0.5) {
                    continue;
                }
                for k in 0..8 {
                    let vk = rib_start + k as f32 * rib_gap + rib_curve * (u - lung.cx) * (u - lung.cx);
                    let d = (v - vk).abs();
                    rib = rib.max(1.0 - smoothstep(0.006, 0.014, d));
                }
            }
            val += rib * rib_contrast * in_body * (0.3 + 0.7 * in_lung);
            for &(fx, fy, ph, amp) in &waves {
                val += amp * (std::f32::consts::TAU * (fx * u + fy * v) + ph).sin();
            }
            img[y * n + x] = val;
        }
    }

    let mut labels = vec![false; PHANTOM_LABELS.len()];
    let mut masks = vec![vec![false; n * n]; PHANTOM_LABELS.len()];

    // Nodule.
    if rng.bernoulli(config.p_nodule) {
        labels[0] = true;
        let lung = &lungs[rng.below(2)];
        let (cx, cy) = lung.sample(&mut rng, 0.8);
        let r = rng.range(config.nodule_radius.0, config.nodule_radius.1) * s;
        let c = rng.range(config.nodule_contrast.0, config.nodule_contrast.1);
        let (px, py) = (cx * s, cy * s);
        for y in 0..n {
            for x in 0..n {
                let d2 = ((x as f32 + 0.5 - px).powi(2) + (y as f32 + 0.5 - py).powi(2)) / (r * r);
                if d2 <= 1.0 {
                    img[y * n + x] += c * (1.0 - d2).sqrt();
                    masks[0][y * n + x] = true;
                }
            }
        }
    }

    // Consolidation.
    if rng.bernoulli(config.p_consolidation) {
        labels[1] = true;
        let lung = &lungs[rng.below(2)];
        let (cx, cy) = lung.sample(&mut rng, 0.6);
        let c = rng.range(config.consolidation_contrast.0, config.consolidation_contrast.1);
        let blobs: Vec<(f32, f32, f32)> = (0..3 + rng.below(3))
            .map(|_| {
                let r = rng.range(config.consolidation_radius.0, config.consolidation_radius.1);
                (cx + rng.range(-0.06, 0.06), cy + rng.range(-0.08, 0.08), r)
            })
            .collect();
        for y in 0..n {
            let v = (y as f32 + 0.5) / s;
            for x in 0..n {
                let u = (x as f32 + 0.5) / s;
                let mut a = 0f32;
                for &(bx, by, r) in &blobs {
                    let d2 = ((u - bx).powi(2) + (v - by).powi(2)) / (r * r);
                    a = a.max((-1.5 * d2).exp());
                }
                // Mottled texture inside the patch.
                let tex = 0.85 + 0.15 * ((u * 37.0).sin() * (v * 41.0).cos());
                img[y * n + x] += c * a * tex;
                if a > 0.3 {
                    masks[1][y * n + x] = true;
                }
            }
        }
    }

    let sigma = rng.range(config.noise_sigma.0, config.noise_sigma.1);
    for p in img.iter_mut() {
        *p = (*p + sigma * rng.normal()).clamp(0.0, 1.0);
    }

    Phantom { image: GrayImage::new(n, n, img).expect("phantom size is consistent"), labels, masks }
}

/// Dilates a boolean mask by `radius` pixels (square structuring element).
pub fn dilate(mask: &[bool], width: usize, height: usize, radius: usize) -> Vec<bool> {
    let mut out = vec![false; mask.len()];
    for y in 0..height {
        for x in 0..width {
            if !mask[y * width + x] {
                continue;
            }
            for yy in y.saturating_sub(radius)..(y + radius + 1).min(height) {
                for xx in x.saturating_sub(radius)..(x + radius + 1).min(width) {
                    out[yy * width + xx] = true;
                }
            }
        }
    }
    out
}
