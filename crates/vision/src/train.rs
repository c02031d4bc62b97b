//! Training of the shipped phantom model: data from [`crate::phantom`], AdamW on a numerically
//! stable BCE-with-logits, cosine learning-rate schedule, Platt calibration fitted on a separate
//! calibration split, metrics on a held-out test split, then `weights.safetensors`,
//! `weights.sha256` and `model-card.toml` written to the output folder.
//!
//! Splits are disjoint by seed: training uses `seed`, calibration `seed + 1`, test `seed + 2`
//! (each image is `phantom::generate(cfg, split_seed, index)`). The crate's tests use other
//! seeds again. Weight initialisation is drawn from [`Pcg32`] (candle's CPU RNG cannot be
//! seeded), so a run is reproducible up to floating-point summation order.

use crate::card::*;
use crate::error::Error;
use crate::image::GrayImage;
use crate::metrics::{self, Platt};
use crate::nn::Network;
use crate::nn::compact::{CompactCnn, CompactCnnConfig};
use crate::phantom::{self, PHANTOM_LABELS, PhantomConfig};
use crate::rng::Pcg32;
use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Instant;

/// Training settings; defaults are those of `radsight-phantom-cxr` 1.1.0.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub id: String,
    pub version: String,
    pub seed: u64,
    pub phantom: PhantomConfig,
    pub architecture: CompactCnnConfig,
    pub steps: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub warmup_steps: usize,
    pub calibration_images: usize,
    pub test_images: usize,
    /// Log every this many steps (0: never).
    pub log_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            id: "radsight-phantom-cxr".into(),
            version: "1.1.0".into(),
            seed: 20_261_201,
            phantom: PhantomConfig::default(),
            architecture: CompactCnnConfig::default(),
            steps: 1600,
            batch_size: 32,
            learning_rate: 4e-3,
            weight_decay: 1e-4,
            warmup_steps: 50,
            calibration_images: 1000,
            test_images: 2000,
            log_every: 50,
        }
    }
}

/// What [`train`] produced.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub card: ModelCard,
    pub final_loss: f32,
    pub seconds: f64,
}

/// Stacks images into a `(B, C, H, W)` tensor, repeating a grayscale image over `channels`.
pub fn batch_tensor(images: &[&GrayImage], channels: usize, device: &Device) -> candle_core::Result<Tensor> {
    let (w, h) = (images[0].width(), images[0].height());
    let mut data = Vec::with_capacity(images.len() * channels * w * h);
    for img in images {
        for _ in 0..channels {
            data.extend_from_slice(img.data());
        }
    }
    Tensor::from_vec(data, (images.len(), channels, h, w), device)
}

/// BCE with logits, stable for large |z|: `max(z,0) − z·t + log(1 + e^{−|z|})`, mean over all.
pub fn bce_with_logits(z: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
    let softplus = ((z.abs()?.neg()?.exp()? + 1.0)?).log()?;
    ((z.relu()? - (z * t)?)? + softplus)?.mean_all()
}

/// Deterministic He-normal initialisation of every variable (biases zero, norm scales one).
pub fn init_vars(varmap: &VarMap, seed: u64) -> candle_core::Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for (i, name) in names.into_iter().enumerate() {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if name.ends_with("bias") || name.ends_with("running_mean") {
            vec![0.0; n]
        } else if name.ends_with("running_var") || name.ends_with("bn.weight") || name.ends_with("adn.N.weight") {
            vec![1.0; n]
        } else {
            let fan_in: usize = dims[1..].iter().product();
            let std = (2.0 / fan_in as f32).sqrt();
            let mut rng = Pcg32::new(seed, 1_000 + i as u64);
            (0..n).map(|_| std * rng.normal()).collect()
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?)?;
    }
    Ok(())
}

/// Per-label logits and labels of a split.
type SplitLogits = (Vec<Vec<f64>>, Vec<Vec<bool>>);

/// Logits of a whole split, in batches.
pub(crate) fn split_logits(net: &dyn Network, cfg: &PhantomConfig, seed: u64, n: usize, device: &Device) -> Result<SplitLogits, Error> {
    let mut logits = vec![Vec::with_capacity(n); PHANTOM_LABELS.len()];
    let mut labels = vec![Vec::with_capacity(n); PHANTOM_LABELS.len()];
    let bs = 64;
    for start in (0..n).step_by(bs) {
        let ph: Vec<_> = (start..(start + bs).min(n)).map(|i| phantom::generate(cfg, seed, i as u64)).collect();
        let imgs: Vec<&GrayImage> = ph.iter().map(|p| &p.image).collect();
        let x = batch_tensor(&imgs, net.in_channels(), device)?;
        let z = net.forward(&x)?.to_vec2::<f32>()?;
        for (row, p) in z.iter().zip(&ph) {
            for l in 0..PHANTOM_LABELS.len() {
                logits[l].push(row[l] as f64);
                labels[l].push(p.labels[l]);
            }
        }
    }
    Ok((logits, labels))
}

/// Trains the phantom model and writes it to `out_dir` (created if needed). `log` receives
/// progress lines.
pub fn train(config: &TrainConfig, out_dir: &Path, mut log: impl FnMut(&str)) -> Result<TrainReport, Error> {
    let start = Instant::now();
    let device = Device::Cpu;
    let arch = CompactCnnConfig { num_labels: PHANTOM_LABELS.len(), in_channels: 1, ..config.architecture.clone() };
    let size = config.phantom.size;

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let net = CompactCnn::new_for_training(&arch, vb)?;
    init_vars(&varmap, config.seed)?;
    let mut opt =
        AdamW::new(varmap.all_vars(), ParamsAdamW { lr: config.learning_rate, weight_decay: config.weight_decay, ..Default::default() })?;

    let mut final_loss = f32::NAN;
    let mut running = 0f32;
    for step in 0..config.steps {
        let lr = if step < config.warmup_steps {
            config.learning_rate * (step + 1) as f64 / config.warmup_steps as f64
        } else {
            let t = (step - config.warmup_steps) as f64 / (config.steps - config.warmup_steps).max(1) as f64;
            config.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        };
        opt.set_learning_rate(lr);
        let base = (step * config.batch_size) as u64;
        let ph: Vec<_> = (0..config.batch_size as u64).map(|i| phantom::generate(&config.phantom, config.seed, base + i)).collect();
        let imgs: Vec<&GrayImage> = ph.iter().map(|p| &p.image).collect();
        let x = batch_tensor(&imgs, 1, &device)?;
        let y: Vec<f32> = ph.iter().flat_map(|p| p.labels.iter().map(|&l| l as u8 as f32)).collect();
        let y = Tensor::from_vec(y, (config.batch_size, PHANTOM_LABELS.len()), &device)?;
        let loss = bce_with_logits(&net.forward_train(&x)?, &y)?;
        opt.backward_step(&loss)?;
        let l = loss.to_scalar::<f32>()?;
        running = if step == 0 { l } else { 0.95 * running + 0.05 * l };
        final_loss = running;
        if config.log_every > 0 && (step + 1) % config.log_every == 0 {
            log(&format!("step {:>5}/{} loss {:.4} lr {:.2e} {:.0}s", step + 1, config.steps, running, lr, start.elapsed().as_secs_f64()));
        }
    }
    let train_seconds = start.elapsed().as_secs_f64();

    // Calibration split: Platt per label, then the Youden threshold on calibrated probabilities.
    let (cal_z, cal_y) = split_logits(&net, &config.phantom, config.seed + 1, config.calibration_images, &device)?;
    let platts: Vec<Platt> = (0..PHANTOM_LABELS.len()).map(|l| Platt::fit(&cal_z[l], &cal_y[l])).collect();
    let thresholds: Vec<f64> = (0..PHANTOM_LABELS.len())
        .map(|l| {
            let p: Vec<f64> = cal_z[l].iter().map(|&z| platts[l].apply(z)).collect();
            metrics::youden_threshold(&p, &cal_y[l])
        })
        .collect();

    // Held-out test split.
    let (test_z, test_y) = split_logits(&net, &config.phantom, config.seed + 2, config.test_images, &device)?;
    let mut label_metrics = Vec::new();
    for l in 0..PHANTOM_LABELS.len() {
        let p: Vec<f64> = test_z[l].iter().map(|&z| platts[l].apply(z)).collect();
        let raw: Vec<f64> = test_z[l].iter().map(|&z| metrics::sigmoid(z)).collect();
        let (se, sp) = metrics::sens_spec(&p, &test_y[l], thresholds[l]);
        let m = LabelMetrics {
            label: PHANTOM_LABELS[l].into(),
            n_positive: test_y[l].iter().filter(|&&b| b).count() as u64,
            auroc: round4(metrics::auroc(&p, &test_y[l]).unwrap_or(f64::NAN)),
            threshold: round4(thresholds[l]),
            sensitivity: round4(se),
            specificity: round4(sp),
            ece: round4(metrics::ece(&p, &test_y[l], 10)),
            ece_uncalibrated: round4(metrics::ece(&raw, &test_y[l], 10)),
            brier: round4(metrics::brier(&p, &test_y[l])),
        };
        log(&format!("test {}: {:?}", PHANTOM_LABELS[l], m));
        label_metrics.push(m);
    }

    std::fs::create_dir_all(out_dir).map_err(|source| Error::WriteFile { path: out_dir.into(), source })?;
    let weights_path = out_dir.join("weights.safetensors");
    varmap.save(&weights_path)?;
    let bytes = std::fs::read(&weights_path).map_err(|source| Error::ReadFile { path: weights_path.clone(), source })?;
    let sha = hex::encode(Sha256::digest(&bytes));
    let sha_path = out_dir.join("weights.sha256");
    std::fs::write(&sha_path, format!("{sha}  weights.safetensors\n")).map_err(|source| Error::WriteFile { path: sha_path, source })?;

    let seconds = start.elapsed().as_secs_f64();
    let card = phantom_card(config, &arch, &platts, &thresholds, label_metrics, sha, seconds, train_seconds, size, &net);
    let card_path = out_dir.join(CARD_FILE);
    let text = card.to_toml().map_err(|reason| Error::ParseCard { path: card_path.clone(), reason })?;
    let header = "# Model card for radsight-phantom-cxr. Written by `radsight_vision::train::train`; do not edit by hand\n# (the registry checks weights.sha256 against the weights file).\n\n";
    std::fs::write(&card_path, format!("{header}{text}")).map_err(|source| Error::WriteFile { path: card_path, source })?;
    Ok(TrainReport { card, final_loss, seconds })
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

#[allow(clippy::too_many_arguments)]
fn phantom_card(
    config: &TrainConfig,
    arch: &CompactCnnConfig,
    platts: &[Platt],
    thresholds: &[f64],
    label_metrics: Vec<LabelMetrics>,
    sha256: String,
    seconds: f64,
    train_seconds: f64,
    size: usize,
    net: &CompactCnn,
) -> ModelCard {
    let cell: usize = arch.strides.iter().product();
    let descriptions = [
        "Nodule: a small round opacity (synthetic sphere projection, radius 3.5-8% of the image side).",
        "Consolidation: an irregular patchy opacity made of overlapping soft blobs in a lung field.",
    ];
    ModelCard {
        id: config.id.clone(),
        version: config.version.clone(),
        name: "radsight phantom chest radiograph findings (demonstration)".into(),
        summary: "DEMONSTRATION MODEL TRAINED ON SYNTHETIC DATA. NOT FOR CLINICAL USE. A compact CNN that \
                  scores two findings (nodule, consolidation) on synthetic chest-radiograph-like phantoms, with \
                  Grad-CAM saliency. It exists to exercise radsight end to end; it has never seen a real image."
            .into(),
        status: "demonstration".into(),
        architecture: Architecture::CompactCnn(arch.clone()),
        input: InputSpec {
            size,
            channels: 1,
            normalisation: "pixel values scaled to [0, 1] after windowing (0 = black); the network standardises internally with (x - input_mean) / input_std".into(),
            windowing: "the DICOM VOI LUT / first window (or full range) mapped to [0, 1], MONOCHROME1 inverted so that dense tissue is bright".into(),
            photometric: "MONOCHROME2 (bright = dense)".into(),
            resize: None,
            intensity_range: None,
            mean: None,
            std: None,
        },
        applies_to: AppliesTo { modalities: vec!["CR".into(), "DX".into()], body_parts: vec!["CHEST".into()], procedure_codes: vec![] },
        labels: PHANTOM_LABELS
            .iter()
            .zip(thresholds)
            .zip(descriptions)
            .map(|((name, &t), d)| LabelSpec {
                name: (*name).into(),
                description: d.into(),
                threshold: round4(t),
                threshold_rule: "maximises Youden's J on the calibration split (calibrated probabilities)".into(),
                code: None,
            })
            .collect(),
        intended_use: IntendedUse {
            purpose: "Demonstration and integration testing of radsight's imaging pipeline (inference, saliency, result storage, FHIR, CDS cards). Not a medical device.".into(),
            users: "radsight developers and testers".into(),
            not_for_clinical_use: true,
            limitations: vec![
                "Trained and validated only on synthetic phantoms; performance on real radiographs is unknown and expected to be poor.".into(),
                "Only two synthetic finding types; every other abnormality is out of scope and will be missed or mislabelled.".into(),
                format!("Input must be a single-channel frontal chest image letterboxed to {size}x{size}, values in [0, 1]."),
                "Calibration was fitted on synthetic data with 50% prevalence per finding; probabilities do not transfer to real prevalences.".into(),
                format!(
                    "Grad-CAM maps are coarse (one cell per {cell} input pixels, a {g}x{g} grid) and show what drives the score, not a segmentation.",
                    g = size / cell
                ),
            ],
        },
        training: TrainingInfo {
            data: format!(
                "Synthetic chest-radiograph-like phantoms from radsight_vision::phantom (body ellipse, lung fields, mediastinum, spine, rib arcs, low-frequency texture, Gaussian noise) with independent nodule and consolidation findings (p = {}, {}). Fresh images every step; training seed {}, calibration seed {}, test seed {}.",
                config.phantom.p_nodule, config.phantom.p_consolidation, config.seed, config.seed + 1, config.seed + 2
            ),
            seed: config.seed,
            images: (config.steps * config.batch_size) as u64,
            steps: config.steps as u64,
            batch_size: config.batch_size as u64,
            optimiser: format!("AdamW (lr {} with {}-step linear warm-up then cosine decay, weight decay {}, betas 0.9/0.999)", config.learning_rate, config.warmup_steps, config.weight_decay),
            loss: "binary cross-entropy with logits (mean over labels and batch)".into(),
            duration_seconds: (seconds * 10.0).round() / 10.0,
            machine: format!("2 shared CPU cores, release build, candle 0.11 CPU backend; {:.0} s of the total in the training loop", train_seconds),
            generator: serde_json::to_string(&config.phantom).unwrap_or_default(),
        },
        calibration: Calibration {
            method: "platt".into(),
            fitted_on: format!("calibration split: {} phantoms, seed {}", config.calibration_images, config.seed + 1),
            n: config.calibration_images as u64,
            params: PHANTOM_LABELS.iter().zip(platts).map(|(l, p)| LabelPlatt { label: (*l).into(), a: p.a, b: p.b }).collect(),
        },
        validation: Validation {
            dataset: format!("held-out test split: {} phantoms, seed {} (not used for training, calibration or thresholds)", config.test_images, config.seed + 2),
            n: config.test_images as u64,
            labels: label_metrics,
        },
        saliency: SaliencySpec {
            default_method: "grad-cam".into(),
            target_layer: net.target_layer(),
            notes: format!(
                "Grad-CAM on the last convolution's ReLU output ({g}x{g} cells of {cell} px); with this GAP + linear head it equals CAM up to a 1/(h*w) factor. Upsampled bilinearly with cell i centred on input pixel {cell}*i (its receptive-field centre). Faithfulness: deletion to a background estimate (grey opening + blur) against a random map on the same grid.",
                g = size / cell
            ),
        },
        weights: WeightsSpec { file: "weights.safetensors".into(), format: "safetensors".into(), dtype: "f32".into(), sha256 },
    }
}
