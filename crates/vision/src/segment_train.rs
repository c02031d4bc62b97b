//! Training a small nodule segmenter (a MONAI-named [`BasicUNet`]) on the synthetic phantoms and
//! their masks, and measuring it: the test segmentation model radsight's pipeline, cards and
//! app are checked with. It is not shipped; tests train it in about a minute.
//!
//! Loss: per-pixel softmax cross-entropy plus the soft Dice loss of the nodule channel (the
//! nodule covers about 1 % of an image, so cross-entropy alone learns "background
//! everywhere"). AdamW with a cosine schedule. Weights are initialised from [`Pcg32`] (see
//! [`crate::train::init_vars`]), so a run is reproducible up to floating-point summation order.
//! Evaluation: the Dice coefficient of the argmax mask against the phantom's nodule mask, on
//! held-out phantoms (another seed) that hold a nodule.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};

use crate::error::Error;
use crate::image::GrayImage;
use crate::nn::unet::{BasicUNet, BasicUNetConfig};
use crate::phantom::{self, PhantomConfig};
use crate::segment::Segmenter;
use crate::train::{batch_tensor, init_vars};

/// Training settings for the test nodule segmenter.
#[derive(Debug, Clone)]
pub struct SegmenterTraining {
    pub seed: u64,
    pub phantom: PhantomConfig,
    /// MONAI's six feature counts.
    pub features: Vec<usize>,
    pub steps: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
}

impl Default for SegmenterTraining {
    fn default() -> Self {
        Self {
            seed: 20_261_203,
            // Mostly nodules (something to outline), consolidation as a distractor.
            phantom: PhantomConfig { size: 64, p_nodule: 0.8, p_consolidation: 0.4, ..PhantomConfig::default() },
            features: vec![8, 8, 16, 32, 64, 8],
            steps: 300,
            batch_size: 8,
            learning_rate: 1e-2,
        }
    }
}

/// The input normalisation the network is trained with (and the import description states):
/// `(x − 0.5) / 0.25` on [0, 1] pixels.
pub const INPUT_MEAN: f32 = 0.5;
pub const INPUT_STD: f32 = 0.25;

/// A trained network's weights (MONAI `BasicUNet` names) and how training ended.
pub struct TrainedSegmenter {
    pub config: BasicUNetConfig,
    pub varmap: VarMap,
    /// Smoothed loss over the last steps.
    pub final_loss: f32,
}

impl TrainedSegmenter {
    /// Writes the weights as safetensors, ready for [`crate::import::import_model`].
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        self.varmap.save(path)?;
        Ok(())
    }

    /// The description [`crate::import::import_model`] takes for these weights.
    pub fn description(&self, id: &str, size: usize) -> String {
        let f = self.config.features.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ");
        format!(
            "id = \"{id}\"\nversion = \"1.0.0\"\nname = \"radsight test nodule segmenter\"\n\
             summary = \"TEST MODEL trained on synthetic phantoms by radsight's tests. Not for clinical use.\"\n\
             architecture = \"basic_unet\"\nunet_features = [{f}]\n\
             training_data = \"radsight_vision::phantom, nodule masks\"\n\
             [input]\nsize = {size}\nchannels = 1\nintensity_range = [0.0, 1.0]\nmean = [{INPUT_MEAN}]\nstd = [{INPUT_STD}]\n\
             [[labels]]\nname = \"nodule\"\n\
             code = {{ system = \"http://snomed.info/sct\", code = \"427359005\", display = \"Solitary nodule of lung\" }}\n\
             [applies_to]\nmodalities = [\"CR\", \"DX\"]\nbody_parts = [\"CHEST\"]\n"
        )
    }
}

/// Trains the nodule segmenter; `log` receives progress lines.
pub fn train_segmenter(t: &SegmenterTraining, mut log: impl FnMut(&str)) -> Result<TrainedSegmenter, Error> {
    let device = Device::Cpu;
    let config = BasicUNetConfig {
        in_channels: 1,
        out_channels: 2,
        features: t.features.clone(),
        input_mean: vec![INPUT_MEAN],
        input_std: vec![INPUT_STD],
    };
    let varmap = VarMap::new();
    let net = BasicUNet::new(&config, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    init_vars(&varmap, t.seed)?;
    let mut opt = AdamW::new(varmap.all_vars(), ParamsAdamW { lr: t.learning_rate, weight_decay: 1e-4, ..Default::default() })?;
    let n = t.phantom.size;
    let mut running = f32::NAN;
    for step in 0..t.steps {
        let progress = step as f64 / t.steps.max(1) as f64;
        opt.set_learning_rate(t.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
        let base = (step * t.batch_size) as u64;
        let ph: Vec<_> = (0..t.batch_size as u64).map(|i| phantom::generate(&t.phantom, t.seed, base + i)).collect();
        let imgs: Vec<&GrayImage> = ph.iter().map(|p| &p.image).collect();
        let x = batch_tensor(&imgs, 1, &device)?;
        let nodule: Vec<f32> = ph.iter().flat_map(|p| p.masks[0].iter().map(|&m| m as u8 as f32)).collect();
        let fg = Tensor::from_vec(nodule, (t.batch_size, 1, n, n), &device)?;
        let target = Tensor::cat(&[&(1.0 - &fg)?, &fg], 1)?;
        let logits = net.forward(&x)?;
        let log_p = candle_nn::ops::log_softmax(&logits, 1)?;
        let ce = (log_p.mul(&target)?.sum_keepdim(1)?.mean_all()? * -1.0)?;
        let p_fg = log_p.narrow(1, 1, 1)?.exp()?;
        let inter = p_fg.mul(&fg)?.sum_all()?;
        let dice = ((inter * 2.0)? + 1.0)?.div(&((p_fg.sum_all()? + fg.sum_all()?)? + 1.0)?)?;
        let loss = (ce + (1.0 - dice)?)?;
        opt.backward_step(&loss)?;
        let l = loss.to_scalar::<f32>()?;
        running = if step == 0 { l } else { 0.9 * running + 0.1 * l };
        if (step + 1) % 50 == 0 {
            log(&format!("step {:>4}/{} loss {running:.4}", step + 1, t.steps));
        }
    }
    Ok(TrainedSegmenter { config, varmap, final_loss: running })
}

/// The Dice coefficient of two masks (1 when both are empty).
pub fn dice(predicted: &[bool], truth: &[bool]) -> f64 {
    let both = predicted.iter().zip(truth).filter(|(p, t)| **p && **t).count();
    let sum = predicted.iter().filter(|p| **p).count() + truth.iter().filter(|t| **t).count();
    if sum == 0 { 1.0 } else { 2.0 * both as f64 / sum as f64 }
}

/// Mean Dice of the segmenter's nodule mask over held-out phantoms (seed `seed`, the first
/// `n` indices) that hold a nodule; returns (mean, how many were scored).
pub fn held_out_dice(segmenter: &Segmenter, phantoms: &PhantomConfig, seed: u64, n: u64) -> Result<(f64, usize), Error> {
    let mut scores = Vec::new();
    for i in 0..n {
        let p = phantom::generate(phantoms, seed, i);
        if !p.labels[0] {
            continue;
        }
        let seg = segmenter.segment(&p.image, &Default::default())?;
        scores.push(dice(&seg.mask(0), &p.masks[0]));
    }
    let mean = if scores.is_empty() { 0.0 } else { scores.iter().sum::<f64>() / scores.len() as f64 };
    Ok((mean, scores.len()))
}
