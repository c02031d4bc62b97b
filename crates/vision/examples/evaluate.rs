//! Measures a model folder the way the crate's quality tests do, plus the service's input path.
//!
//! `cargo run -p radsight-vision --release --example evaluate -- [MODELS_ROOT] [--quick]`
//! (MODELS_ROOT defaults to `models`; the model id is `radsight-phantom-cxr`).
//! - localisation: Grad-CAM peak inside the lesion mask dilated by 3 px, 200 images with
//!   lesions of seed 777003 (as `tests/vision/quality.rs`);
//! - faithfulness: deletion AUC below the random map's, 100 positive labels of seed 777005;
//! - resized input: 100 phantoms of seed 424242 generated at 256×256 and shrunk to 96 with a
//!   Pillow-style bilinear (triangle, widened when shrinking) filter, as the service letterboxes
//!   DICOM pixels; AUROC per label and the largest nodule's probability vs the threshold.

use radsight_vision::GrayImage;
use radsight_vision::Registry;
use radsight_vision::metrics::auroc;
use radsight_vision::phantom::{PHANTOM_LABELS, PhantomConfig, dilate, generate};
use radsight_vision::saliency::{deletion_faithfulness, grad_cam};
use std::time::Instant;

/// Pillow BILINEAR resize (triangle filter, support widened by the scale when shrinking).
fn pillow_resize(src: &[f32], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<f32> {
    fn taps(input: usize, output: usize) -> Vec<(usize, Vec<f64>)> {
        let scale = input as f64 / output as f64;
        let fs = scale.max(1.0);
        (0..output)
            .map(|i| {
                let c = (i as f64 + 0.5) * scale;
                let min = ((c - fs + 0.5).floor().max(0.0)) as usize;
                let max = ((c + fs + 0.5).floor() as usize).min(input).max(min + 1);
                let mut w: Vec<f64> = (min..max).map(|x| (1.0 - ((x as f64 - c + 0.5) / fs).abs()).max(0.0)).collect();
                let s: f64 = w.iter().sum();
                w.iter_mut().for_each(|v| *v /= s);
                (min, w)
            })
            .collect()
    }
    let (hx, vy) = (taps(sw, dw), taps(sh, dh));
    let mut tmp = vec![0f32; sh * dw];
    for y in 0..sh {
        for (x, (s, w)) in hx.iter().enumerate() {
            tmp[y * dw + x] = w.iter().enumerate().map(|(k, w)| w * src[y * sw + s + k] as f64).sum::<f64>() as f32;
        }
    }
    let mut out = vec![0f32; dh * dw];
    for (y, (s, w)) in vy.iter().enumerate() {
        for x in 0..dw {
            out[y * dw + x] = w.iter().enumerate().map(|(k, w)| w * tmp[(s + k) * dw + x] as f64).sum::<f64>() as f32;
        }
    }
    out
}

fn main() {
    let mut root = String::from("models");
    let mut quick = false;
    for a in std::env::args().skip(1) {
        if a == "--quick" {
            quick = true;
        } else {
            root = a;
        }
    }
    let model = Registry::open(&root).unwrap().load("radsight-phantom-cxr").unwrap();
    let cfg = PhantomConfig::default();
    let n = cfg.size;
    let t0 = Instant::now();

    // Localisation.
    let (mut images, mut hits, mut total, mut i) = (0, [0usize; 2], [0usize; 2], 0u64);
    let mut nodule_miss_dist = Vec::new();
    let mut cons_miss = Vec::new();
    while images < 200 {
        let p = generate(&cfg, 777_003, i);
        i += 1;
        if !p.labels.iter().any(|&l| l) {
            continue;
        }
        images += 1;
        for l in 0..PHANTOM_LABELS.len() {
            if !p.labels[l] {
                continue;
            }
            let s = model.saliency(&p.image, l, &Default::default()).unwrap();
            let mask = dilate(&p.masks[l], n, n, 3);
            total[l] += 1;
            let hit = mask[s.peak.y * n + s.peak.x];
            hits[l] += hit as usize;
            if !hit && l == 1 {
                let on_nodule = p.labels[0] && dilate(&p.masks[0], n, n, 3)[s.peak.y * n + s.peak.x];
                let d = (0..n * n)
                    .filter(|&j| p.masks[1][j])
                    .map(|j| (((j % n) as f64 - s.peak.x as f64).powi(2) + ((j / n) as f64 - s.peak.y as f64).powi(2)).sqrt())
                    .fold(f64::INFINITY, f64::min);
                cons_miss.push(format!("{}{:.0}", if on_nodule { "N" } else { "" }, d));
            }
            if !hit && l == 0 {
                let (mut sx, mut sy, mut c) = (0.0, 0.0, 0.0);
                for (j, &m) in p.masks[0].iter().enumerate() {
                    if m {
                        sx += (j % n) as f64;
                        sy += (j / n) as f64;
                        c += 1.0;
                    }
                }
                let d = ((sx / c - s.peak.x as f64).powi(2) + (sy / c - s.peak.y as f64).powi(2)).sqrt();
                nodule_miss_dist.push((d * 10.0).round() / 10.0);
            }
        }
    }
    let rate = (hits[0] + hits[1]) as f64 / (total[0] + total[1]) as f64;
    println!(
        "localisation: {}/{} = {:.3} (nodule {}/{}, consolidation {}/{}) [{:.0}s]",
        hits[0] + hits[1],
        total[0] + total[1],
        rate,
        hits[0],
        total[0],
        hits[1],
        total[1],
        t0.elapsed().as_secs_f64()
    );
    println!("  nodule misses: distance peak-centroid (px) {nodule_miss_dist:?}");
    println!("  consolidation misses: distance peak-mask (px), N = on the nodule {cons_miss:?}");

    // Faithfulness.
    let (mut better, mut tot, mut sr, mut sn, mut i) = ([0usize; 2], [0usize; 2], 0f64, 0f64, 0u64);
    while tot[0] + tot[1] < 100 {
        let p = generate(&cfg, 777_005, i);
        i += 1;
        for class in 0..2 {
            if !p.labels[class] || tot[0] + tot[1] >= 100 {
                continue;
            }
            let x = model.input_tensor(&[&p.image]).unwrap();
            let s = grad_cam(model.network(), &x, class, "c").unwrap();
            let f = deletion_faithfulness(model.network(), &x, class, model.card().platt(class), &s.map, 10, i).unwrap();
            tot[class] += 1;
            better[class] += (f.deletion_auc < f.random_deletion_auc) as usize;
            sr += f.deletion_auc as f64;
            sn += f.random_deletion_auc as f64;
        }
    }
    println!(
        "faithfulness: {}/{} = {:.3} (nodule {}/{}, consolidation {}/{}); mean AUC {:.3} vs random {:.3} [{:.0}s]",
        better[0] + better[1],
        tot[0] + tot[1],
        (better[0] + better[1]) as f64 / 100.0,
        better[0],
        tot[0],
        better[1],
        tot[1],
        sr / 100.0,
        sn / 100.0,
        t0.elapsed().as_secs_f64()
    );
    if quick {
        return;
    }

    // Service-style input: 256×256 phantoms shrunk to 96.
    let big = PhantomConfig { size: 256, ..cfg.clone() };
    let mut scores = vec![Vec::new(); 2];
    let mut native = vec![Vec::new(); 2];
    let mut labels = vec![Vec::new(); 2];
    let mut largest: Option<(usize, u64)> = None;
    let mut probs_by_index = Vec::new();
    for i in 0..100u64 {
        let p = generate(&big, 424_242, i);
        let small = GrayImage::new(96, 96, pillow_resize(p.image.data(), 256, 256, 96, 96)).unwrap();
        let pr = model.predict(&[&small]).unwrap().remove(0);
        let q = generate(&cfg, 424_242, i);
        let prn = model.predict(&[&q.image]).unwrap().remove(0);
        for l in 0..2 {
            scores[l].push(pr[l].probability as f64);
            native[l].push(prn[l].probability as f64);
            labels[l].push(p.labels[l]);
        }
        let area = p.masks[0].iter().filter(|&&m| m).count();
        if p.labels[0] && largest.is_none_or(|(a, _)| area > a) {
            largest = Some((area, i));
        }
        probs_by_index.push(pr[0].probability);
    }
    for l in 0..2 {
        println!(
            "256->96 resized, seed 424242: {} AUROC {:.4} (same indices generated at 96: {:.4})",
            PHANTOM_LABELS[l],
            auroc(&scores[l], &labels[l]).unwrap(),
            auroc(&native[l], &labels[l]).unwrap()
        );
    }
    if let Some((area, i)) = largest {
        println!(
            "largest nodule: index {i} ({area} px at 256) p = {:.3}, threshold {:.3}",
            probs_by_index[i as usize],
            model.card().labels[0].threshold
        );
    }
    println!("total {:.0}s", t0.elapsed().as_secs_f64());
}
