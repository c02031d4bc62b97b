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
//!   gradients on the image grid (`GridSystem`; the system is symmetric positive definite
//!   wherever removed pixels touch kept ones; pytorch-grad-cam uses SciPy's direct `spsolve`,
//!   to the same solution). Then
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

/// The weight of an edge-adjacent and of a diagonal neighbour (pytorch-grad-cam's
/// `neighbors_weights`).
const EDGE: f64 = 1.0 / 6.0;
const CORNER: f64 = 1.0 / 12.0;

/// `(dy, dx, weight)` of the 8 neighbours.
const NEIGHBOURS: [(isize, isize, f64); 8] =
    [(1, 1, CORNER), (0, 1, EDGE), (-1, 1, CORNER), (1, -1, CORNER), (0, -1, EDGE), (-1, -1, CORNER), (1, 0, EDGE), (-1, 0, EDGE)];

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
    let system = GridSystem::new(height, width, keep);
    let mut out = img.to_vec();
    for c in 0..channels {
        let plane = &img[c * n..(c + 1) * n];
        let x = system.solve(&system.rhs(plane, keep), tol);
        for (p, v) in out[c * n..(c + 1) * n].iter_mut().enumerate().filter(|&(p, _)| !keep[p]) {
            *v = x[system.at(p)] as f32;
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

/// The imputation system `(D − W) x = b` over the removed pixels, held on the image grid with a
/// one-pixel border of zeros rather than as a sparse matrix over the unknowns.
///
/// Why a grid: every vector of the solver is zero at kept pixels and on the border, so `W v` is
/// the same 8-neighbour stencil at every pixel, masked to the unknowns, with no index lists. That
/// runs row by row over contiguous memory (vectorised by the compiler), where the former sparse
/// form went through an index per coupling; the arithmetic, and so the solution, is the same.
struct GridSystem {
    /// Padded width (`width + 2`).
    stride: usize,
    /// Padded height (`height + 2`).
    rows: usize,
    /// 1 at removed pixels, 0 at kept ones and on the border.
    unknown: Vec<f64>,
    /// Each pixel's in-image neighbour weight sum (`D`), zero where not unknown.
    diag: Vec<f64>,
    /// The Jacobi preconditioner `D⁻¹`, zero where not unknown.
    inv: Vec<f64>,
}

impl GridSystem {
    fn new(height: usize, width: usize, keep: &[bool]) -> Self {
        let (stride, rows) = (width + 2, height + 2);
        let mut grid =
            Self { stride, rows, unknown: vec![0.0; stride * rows], diag: vec![0.0; stride * rows], inv: vec![0.0; stride * rows] };
        for p in (0..height * width).filter(|&p| !keep[p]) {
            let (y, x) = ((p / width) as isize, (p % width) as isize);
            let d: f64 = NEIGHBOURS
                .iter()
                .filter(|&&(dy, dx, _)| (0..height as isize).contains(&(y + dy)) && (0..width as isize).contains(&(x + dx)))
                .map(|&(_, _, w)| w)
                .sum();
            let at = grid.at(p);
            grid.unknown[at] = 1.0;
            grid.diag[at] = d;
            grid.inv[at] = if d > 0.0 { 1.0 / d } else { 0.0 };
        }
        grid
    }

    /// Pixel `p` of the image (row-major) on the padded grid.
    fn at(&self, p: usize) -> usize {
        let width = self.stride - 2;
        (p / width + 1) * self.stride + p % width + 1
    }

    /// `W v` at every unknown pixel, and `D v − W v` when `diag` is given; zero elsewhere.
    fn stencil(&self, v: &[f64], out: &mut [f64], diag: Option<&[f64]>) {
        let s = self.stride;
        for y in 1..self.rows - 1 {
            let row = y * s;
            let (up, mid, down) = (&v[row - s..row], &v[row..row + s], &v[row + s..row + 2 * s]);
            let unknown = &self.unknown[row..row + s];
            let o = &mut out[row..row + s];
            for x in 1..s - 1 {
                let coupled =
                    EDGE * (mid[x - 1] + mid[x + 1] + up[x] + down[x]) + CORNER * (up[x - 1] + up[x + 1] + down[x - 1] + down[x + 1]);
                o[x] = unknown[x] * (diag.map_or(0.0, |d| d[row + x] * mid[x]) - coupled);
            }
        }
    }

    fn apply(&self, v: &[f64], out: &mut [f64]) {
        self.stencil(v, out, Some(&self.diag));
    }

    /// `b`: each unknown's weighted sum of its kept neighbours' values.
    fn rhs(&self, plane: &[f32], keep: &[bool]) -> Vec<f64> {
        let mut kept = vec![0f64; self.unknown.len()];
        for (p, &v) in plane.iter().enumerate().filter(|&(p, _)| keep[p]) {
            kept[self.at(p)] = f64::from(v);
        }
        let mut b = vec![0f64; kept.len()];
        self.stencil(&kept, &mut b, None);
        b.iter_mut().for_each(|v| *v = -*v);
        b
    }

    /// Jacobi-preconditioned conjugate gradients to a squared relative residual `tol`; every
    /// vector stays zero off the unknowns.
    fn solve(&self, b: &[f64], tol: f64) -> Vec<f64> {
        let inv = &self.inv;
        // Start from the weighted mean of the kept neighbours (exact for isolated pixels).
        let mut x: Vec<f64> = b.iter().zip(inv).map(|(b, i)| b * i).collect();
        let mut ap = vec![0f64; b.len()];
        self.apply(&x, &mut ap);
        let mut r: Vec<f64> = b.iter().zip(&ap).map(|(b, a)| b - a).collect();
        let mut z: Vec<f64> = r.iter().zip(inv).map(|(r, i)| r * i).collect();
        let mut p = z.clone();
        let (mut rr, mut rz) = (dot(&r, &r), dot(&r, &z));
        let tol = tol * dot(b, b).max(1e-30);
        let unknowns = self.unknown.iter().filter(|&&u| u > 0.0).count();
        for _ in 0..10 * unknowns.max(10) {
            if rr <= tol {
                break;
            }
            self.apply(&p, &mut ap);
            let pap = dot(&p, &ap);
            if pap <= 0.0 {
                break;
            }
            let alpha = rz / pap;
            for (((x, r), (p, ap)), (z, inv)) in x.iter_mut().zip(r.iter_mut()).zip(p.iter().zip(&ap)).zip(z.iter_mut().zip(inv)) {
                *x += alpha * p;
                *r -= alpha * ap;
                *z = *r * inv;
            }
            let rz_new = dot(&r, &z);
            rr = dot(&r, &r);
            let beta = rz_new / rz;
            rz = rz_new;
            for (p, z) in p.iter_mut().zip(&z) {
                *p = z + beta * *p;
            }
        }
        x
    }
}

/// `a · b` with eight running sums, so the compiler can keep them in vector registers (a single
/// running sum must be added in order and stays scalar).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut sums = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(a, b)| a * b).sum();
    for (a, b) in ca.zip(cb) {
        for i in 0..8 {
            sums[i] += a[i] * b[i];
        }
    }
    sums.iter().sum::<f64>() + tail
}

/// The pixels ROAD keeps (`true`) at each of `percentiles`: most relevant removed first (MoRF)
/// for every percentile, then least relevant first (LeRF), as the module docs define them.
pub fn removal_masks(map: &[f32], percentiles: &[f32]) -> Vec<Vec<bool>> {
    let inverted: Vec<f32> = map.iter().map(|&v| 1.0 - v).collect();
    [map, inverted.as_slice()]
        .into_iter()
        .flat_map(|ranking| {
            percentiles.iter().map(move |&p| {
                let t = percentile(ranking, p);
                ranking.iter().map(|&v| v < t).collect()
            })
        })
        .collect()
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
    let masks = removal_masks(map, &options.percentiles);
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

    /// The imputation as a dense system over the removed pixels, solved by Gaussian elimination:
    /// the definition in the module docs, written independently of the grid solver.
    fn impute_directly(img: &[f32], height: usize, width: usize, keep: &[bool]) -> Vec<f32> {
        let unknown: Vec<usize> = (0..height * width).filter(|&p| !keep[p]).collect();
        let m = unknown.len();
        let mut a = vec![vec![0f64; m + 1]; m];
        for (row, &p) in unknown.iter().enumerate() {
            let (y, x) = ((p / width) as isize, (p % width) as isize);
            for &(dy, dx, w) in &NEIGHBOURS {
                let (ny, nx) = (y + dy, x + dx);
                if ny < 0 || nx < 0 || ny >= height as isize || nx >= width as isize {
                    continue;
                }
                let q = ny as usize * width + nx as usize;
                a[row][row] += w;
                match unknown.iter().position(|&u| u == q) {
                    Some(col) => a[row][col] -= w,
                    None => a[row][m] += w * img[q] as f64,
                }
            }
        }
        for col in 0..m {
            let pivot = (col..m).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs())).unwrap();
            a.swap(col, pivot);
            let pivot_row = a[col].clone();
            for (_, values) in a.iter_mut().enumerate().filter(|&(row, _)| row != col) {
                let f = values[col] / pivot_row[col];
                for (v, p) in values[col..].iter_mut().zip(&pivot_row[col..]) {
                    *v -= f * p;
                }
            }
        }
        let mut out = img.to_vec();
        for (row, &p) in unknown.iter().enumerate() {
            out[p] = (a[row][m] / a[row][row]) as f32;
        }
        out
    }

    #[test]
    fn the_grid_solver_matches_a_direct_solve_with_holes_on_edges_and_corners() {
        let (h, w) = (9, 11);
        let mut rng = Pcg32::new(5, 9);
        let img: Vec<f32> = (0..h * w).map(|_| rng.uniform()).collect();
        // Random scattered pixels, plus a block through the top-left corner and a run along the
        // right edge, so every border case of the stencil is exercised.
        let keep: Vec<bool> = (0..h * w)
            .map(|p| {
                let (y, x) = (p / w, p % w);
                let block = y < 4 && x < 3;
                let edge = x == w - 1 && (2..7).contains(&y);
                !(block || edge || rng.uniform() < 0.3)
            })
            .collect();
        let ours = noisy_linear_impute(&img, 1, h, w, &keep, 0.0, &mut Pcg32::new(1, 1));
        let direct = impute_directly(&img, h, w, &keep);
        for p in 0..h * w {
            assert!((ours[p] - direct[p]).abs() < 1e-4, "pixel {p} (kept {}): {} vs {}", keep[p], ours[p], direct[p]);
        }
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
