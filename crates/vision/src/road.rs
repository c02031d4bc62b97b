//! ROAD — RemOve And Debias (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy
//! for Attribution Methods"), as pytorch-grad-cam 1.5.7 implements it
//! (`pytorch_grad_cam.metrics.road`): pixels are removed by **noisy linear imputation** and the
//! change of the model's score is recorded.
//!
//! - **Removal order.** Most relevant first (MoRF) at percentile `p`: the pixels whose map value
//!   is ≥ the map's `p`-th percentile (NumPy's linear interpolation) are imputed, i.e. the top
//!   `100 − p` %. Least relevant first (LeRF) at `p`: the same on `1 − map`, i.e. about the
//!   `100 − p` % least relevant pixels are imputed.
//! - **Imputation.** Each removed pixel becomes the weighted mean of its 8 neighbours inside the
//!   image (weights 1/6 edge-adjacent, 1/12 diagonal), removed neighbours being unknowns too:
//!   one sparse linear system per channel, solved here by Jacobi-preconditioned conjugate
//!   gradients (the system is symmetric positive definite wherever removed pixels touch kept
//!   ones; pytorch-grad-cam uses SciPy's direct `spsolve`, to the same solution). Then
//!   `noise · N(0, 1)` (0.01 by default) is added to every imputed value, seeded here
//!   ([`Pcg32`]), so the result is reproducible.
//! - **Score.** `score(after) − score(before)` for the target class, per percentile; the caller
//!   chooses the score of a logit (radsight reports the calibrated probability). MoRF should
//!   drop the score (more negative is more faithful), LeRF should keep it (near 0 is more
//!   faithful); `combined = (mean LeRF − mean MoRF) / 2`, higher is better, as
//!   pytorch-grad-cam's `ROADCombined`.
//!
//! Imputation happens on the network's input as the service gives it ([0, 1] pixels); the
//! network's own standardisation is affine per channel, so it commutes with the imputation,
//! and the noise is 0.01 of the [0, 1] range.

use crate::nn::Network;
use crate::rng::Pcg32;
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// `(dy, dx, weight)` of the 8 neighbours (pytorch-grad-cam's `neighbors_weights`).
const NEIGHBOURS: [(isize, isize, f64); 8] = [
    (1, 1, 1.0 / 12.0),
    (0, 1, 1.0 / 6.0),
    (-1, 1, 1.0 / 12.0),
    (1, -1, 1.0 / 12.0),
    (0, -1, 1.0 / 6.0),
    (-1, -1, 1.0 / 12.0),
    (1, 0, 1.0 / 6.0),
    (-1, 0, 1.0 / 6.0),
];

/// Options for [`road`]. Defaults: percentiles 10, 20, …, 90 (pytorch-grad-cam's
/// `ROAD*Average`), noise 0.01, seed 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoadOptions {
    pub percentiles: Vec<f32>,
    pub noise: f32,
    pub seed: u64,
}

impl Default for RoadOptions {
    fn default() -> Self {
        Self { percentiles: (1..=9).map(|k| 10.0 * k as f32).collect(), noise: 0.01, seed: 0 }
    }
}

/// ROAD scores of one map (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Road {
    pub percentiles: Vec<f32>,
    /// `score(MoRF-imputed) − score(original)` per percentile.
    pub morf: Vec<f32>,
    /// `score(LeRF-imputed) − score(original)` per percentile.
    pub lerf: Vec<f32>,
    pub morf_mean: f32,
    pub lerf_mean: f32,
    /// `(lerf_mean − morf_mean) / 2`; higher is more faithful.
    pub combined: f32,
    pub noise: f32,
    pub seed: u64,
}

/// NumPy's `percentile` with its default linear interpolation.
pub fn percentile(values: &[f32], p: f32) -> f32 {
    let mut v: Vec<f32> = values.to_vec();
    v.sort_by(f32::total_cmp);
    let pos = (p as f64 / 100.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    let t = pos - lo as f64;
    (v[lo] as f64 + (v[hi] as f64 - v[lo] as f64) * t) as f32
}

/// Noisy linear imputation of the pixels where `keep` is false, independently per channel of
/// `img` (`channels × height × width`, row-major).
pub fn noisy_linear_impute(
    img: &[f32],
    channels: usize,
    height: usize,
    width: usize,
    keep: &[bool],
    noise: f32,
    rng: &mut Pcg32,
) -> Vec<f32> {
    let mut out = impute(img, channels, height, width, keep, ROAD_TOL);
    add_noise(&mut out, channels, height * width, keep, noise, rng);
    out
}

/// Noise after solving, channel-major like torch.randn_like(res.t()).
fn add_noise(out: &mut [f32], channels: usize, n: usize, keep: &[bool], noise: f32, rng: &mut Pcg32) {
    for c in 0..channels {
        for p in (0..n).filter(|&p| !keep[p]) {
            out[c * n + p] += noise * rng.normal();
        }
    }
}

/// Linear imputation without noise, CG to a squared relative residual `tol`.
fn impute(img: &[f32], channels: usize, height: usize, width: usize, keep: &[bool], tol: f64) -> Vec<f32> {
    let n = height * width;
    let unknown: Vec<usize> = (0..n).filter(|&p| !keep[p]).collect();
    let mut index = vec![u32::MAX; n];
    for (k, &p) in unknown.iter().enumerate() {
        index[p] = k as u32;
    }
    // Per unknown: the in-image weight sum; the couplings to other unknowns (CSR) and to kept
    // pixels (CSR).
    let m = unknown.len();
    let mut diag = vec![0f64; m];
    let (mut c_start, mut c_idx, mut c_w) = (Vec::with_capacity(m + 1), Vec::with_capacity(8 * m), Vec::with_capacity(8 * m));
    let (mut k_start, mut k_idx, mut k_w) = (Vec::with_capacity(m + 1), Vec::new(), Vec::new());
    c_start.push(0);
    k_start.push(0);
    for (k, &p) in unknown.iter().enumerate() {
        let (y, x) = ((p / width) as isize, (p % width) as isize);
        for &(dy, dx, w) in &NEIGHBOURS {
            let (ny, nx) = (y + dy, x + dx);
            if ny < 0 || nx < 0 || ny >= height as isize || nx >= width as isize {
                continue;
            }
            let q = ny as usize * width + nx as usize;
            diag[k] += w;
            if keep[q] {
                k_idx.push(q as u32);
                k_w.push(w);
            } else {
                c_idx.push(index[q]);
                c_w.push(w);
            }
        }
        c_start.push(c_idx.len());
        k_start.push(k_idx.len());
    }
    let system = System { diag, start: c_start, idx: c_idx, w: c_w };
    let mut out = img.to_vec();
    for c in 0..channels {
        let plane = &img[c * n..(c + 1) * n];
        let b: Vec<f64> = (0..m).map(|k| (k_start[k]..k_start[k + 1]).map(|e| k_w[e] * plane[k_idx[e] as usize] as f64).sum()).collect();
        let x = system.solve(&b, tol);
        for (k, &p) in unknown.iter().enumerate() {
            out[c * n + p] = x[k] as f32;
        }
    }
    out
}

const ROAD_TOL: f64 = 1e-10;

/// [`impute`] of every mask, in order, on up to as many threads as there are cores.
fn impute_all(img: &[f32], channels: usize, height: usize, width: usize, masks: &[Vec<bool>]) -> Vec<Vec<f32>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(masks.len()).max(1);
    let per = masks.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = masks
            .chunks(per.max(1))
            .map(|chunk| {
                scope.spawn(move || chunk.iter().map(|keep| impute(img, channels, height, width, keep, ROAD_TOL)).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}

/// `(D − W)` in CSR form: `D` diagonal, `W` the couplings between unknowns.
struct System {
    diag: Vec<f64>,
    start: Vec<usize>,
    idx: Vec<u32>,
    w: Vec<f64>,
}

impl System {
    fn apply(&self, v: &[f64], out: &mut [f64]) {
        for k in 0..self.diag.len() {
            let mut s = self.diag[k] * v[k];
            for e in self.start[k]..self.start[k + 1] {
                s -= self.w[e] * v[self.idx[e] as usize];
            }
            out[k] = s;
        }
    }

    /// Jacobi-preconditioned conjugate gradients to a relative residual of 1e-8.
    fn solve(&self, b: &[f64], tol: f64) -> Vec<f64> {
        let m = self.diag.len();
        let inv: Vec<f64> = self.diag.iter().map(|&d| if d > 0.0 { 1.0 / d } else { 0.0 }).collect();
        // Start from the weighted mean of the kept neighbours (exact for isolated pixels).
        let mut x: Vec<f64> = (0..m).map(|k| b[k] * inv[k]).collect();
        let mut ax = vec![0f64; m];
        self.apply(&x, &mut ax);
        let mut r: Vec<f64> = (0..m).map(|k| b[k] - ax[k]).collect();
        let mut z: Vec<f64> = (0..m).map(|k| r[k] * inv[k]).collect();
        let mut p = z.clone();
        let mut rz: f64 = r.iter().zip(&z).map(|(a, b)| a * b).sum();
        let tol = tol * b.iter().map(|v| v * v).sum::<f64>().max(1e-30);
        let mut ap = vec![0f64; m];
        for _ in 0..10 * m.max(10) {
            if r.iter().map(|v| v * v).sum::<f64>() <= tol {
                break;
            }
            self.apply(&p, &mut ap);
            let pap: f64 = p.iter().zip(&ap).map(|(a, b)| a * b).sum();
            if pap <= 0.0 {
                break;
            }
            let alpha = rz / pap;
            let mut rz_new = 0.0;
            for k in 0..m {
                x[k] += alpha * p[k];
                r[k] -= alpha * ap[k];
                z[k] = r[k] * inv[k];
                rz_new += r[k] * z[k];
            }
            let beta = rz_new / rz;
            rz = rz_new;
            for k in 0..m {
                p[k] = z[k] + beta * p[k];
            }
        }
        x
    }
}

/// ROAD MoRF and LeRF of `map` (input resolution, row-major) for `class` on the single image
/// `x` `(1, C, H, W)`; `score` maps the class logit to the reported score.
pub fn road(net: &dyn Network, x: &Tensor, class: usize, score: &dyn Fn(f32) -> f32, map: &[f32], options: &RoadOptions) -> Result<Road> {
    let (b, c, h, w) = x.dims4()?;
    if b != 1 {
        candle_core::bail!("road expects a single image, got a batch of {b}");
    }
    if map.len() != h * w {
        candle_core::bail!("road: map has {} values for a {w}x{h} input", map.len());
    }
    let img: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let inverted: Vec<f32> = map.iter().map(|&v| 1.0 - v).collect();
    let masks: Vec<Vec<bool>> = [map, inverted.as_slice()]
        .into_iter()
        .flat_map(|ranking| {
            options.percentiles.iter().map(move |&p| {
                let t = percentile(ranking, p);
                ranking.iter().map(|&v| v < t).collect()
            })
        })
        .collect();
    // The solves are independent and most of ROAD's time: spread over the cores. The noise is
    // drawn afterwards in the masks' order, so the result does not depend on the thread count.
    let solved = impute_all(&img, c, h, w, &masks);
    let mut rng = Pcg32::new(options.seed, 0x0_5ad);
    let mut batch: Vec<f32> = Vec::with_capacity((masks.len() + 1) * img.len());
    batch.extend_from_slice(&img);
    for (mut out, keep) in solved.into_iter().zip(&masks) {
        add_noise(&mut out, c, h * w, keep, options.noise, &mut rng);
        batch.extend(out);
    }
    let scores: Vec<f32> =
        crate::saliency::class_logits_in_chunks(net, &batch, (c, h, w), class, x.device())?.into_iter().map(score).collect();
    let k = options.percentiles.len();
    let morf: Vec<f32> = scores[1..=k].iter().map(|s| s - scores[0]).collect();
    let lerf: Vec<f32> = scores[k + 1..].iter().map(|s| s - scores[0]).collect();
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
    let (morf_mean, lerf_mean) = (mean(&morf), mean(&lerf));
    Ok(Road {
        percentiles: options.percentiles.clone(),
        morf,
        lerf,
        morf_mean,
        lerf_mean,
        combined: (lerf_mean - morf_mean) / 2.0,
        noise: options.noise,
        seed: options.seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy_linear_interpolation() {
        let v = [3.0, 1.0, 2.0, 4.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert!((percentile(&v, 50.0) - 2.5).abs() < 1e-6);
        assert!((percentile(&v, 10.0) - 1.3).abs() < 1e-6);
    }

    #[test]
    fn imputing_a_large_central_region_of_224_squared_is_fast() {
        let (h, w) = (224, 224);
        let img: Vec<f32> = (0..h * w).map(|p| ((p % w) as f32 * 0.01).sin()).collect();
        let keep: Vec<bool> = (0..h * w)
            .map(|p| {
                let (y, x) = (p / w, p % w);
                !(10..214).contains(&y) || !(10..214).contains(&x)
            })
            .collect();
        let t = std::time::Instant::now();
        let out = noisy_linear_impute(&img, 1, h, w, &keep, 0.0, &mut Pcg32::new(1, 1));
        println!("224² with 83% removed: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        assert!(out.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn imputation_without_noise_reproduces_a_linear_ramp_and_keeps_known_pixels() {
        let (h, w) = (12, 10);
        let img: Vec<f32> = (0..h * w).map(|p| (p % w) as f32 * 0.1).collect();
        let mut keep = vec![true; h * w];
        for y in 3..8 {
            for x in 2..7 {
                keep[y * w + x] = false;
            }
        }
        let out = noisy_linear_impute(&img, 1, h, w, &keep, 0.0, &mut Pcg32::new(1, 1));
        for p in 0..h * w {
            assert!((out[p] - img[p]).abs() < 1e-5, "pixel {p}: {} vs {}", out[p], img[p]);
        }
    }
}
