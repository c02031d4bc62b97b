//! `Model`: a loaded network with its card; prediction (calibrated probabilities) and
//! [`Model::analyze`] (probabilities + saliency + faithfulness in one call).

use crate::card::{Architecture, ModelCard};
use crate::error::Error;
use crate::image::GrayImage;
use crate::nn::Network;
use crate::nn::compact::CompactCnn;
use crate::nn::densenet::DenseNet;
use crate::nn::efficientnet::EfficientNet;
use crate::nn::resnet::ResNet;
use crate::nn::unet::BasicUNet;
use crate::rng::Pcg32;
use crate::road::{self, Road, RoadOptions};
use crate::saliency::{self, Faithfulness, Saliency, SaliencyMethod};
use crate::train::batch_tensor;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Serialize;
use std::time::Instant;

/// A network with its model card, ready for inference. Cheap to share behind an `Arc`; all
/// methods take `&self`.
pub struct Model {
    card: ModelCard,
    net: Box<dyn Network>,
    device: Device,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("id", &self.card.id).field("version", &self.card.version).finish()
    }
}

/// One label's calibrated probability and decision.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LabelProbability {
    pub label: String,
    /// Calibrated (the card's Platt parameters applied to the logit).
    pub probability: f32,
    pub threshold: f32,
    pub positive: bool,
}

/// Options for [`Model::analyze`]. Defaults: Grad-CAM, target = the label with the highest
/// calibrated probability, 10 deletion steps, random-map seed 0.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    pub method: SaliencyMethod,
    /// Label to explain; `None` picks the most probable label.
    pub target: Option<String>,
    pub deletion_steps: usize,
    pub random_seed: u64,
    /// ROAD of the map and of a seeded per-pixel random map ([`crate::road`]); `None` skips it.
    pub road: Option<RoadOptions>,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        Self { method: SaliencyMethod::GradCam, target: None, deletion_steps: 10, random_seed: 0, road: Some(RoadOptions::default()) }
    }
}

/// ROAD of an explanation and of a random map on the same image, label and score.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RoadFaithfulness {
    pub map: Road,
    /// A per-pixel uniform random map (seeded with the options' seed).
    pub random: Road,
    /// `map.combined > random.combined`.
    pub beats_random: bool,
}

/// Everything one analysis produces.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub model_id: String,
    pub model_version: String,
    pub probabilities: Vec<LabelProbability>,
    pub saliency: Saliency,
    pub faithfulness: Faithfulness,
    /// ROAD (remove and debias) of the map against a random map, on the calibrated
    /// probability; `None` when not requested.
    pub road: Option<RoadFaithfulness>,
    pub runtime_ms: f64,
}

impl Model {
    /// Builds the card's architecture from safetensors bytes (already hash-checked by the
    /// registry; this function does not check the hash).
    pub fn from_safetensors(card: ModelCard, weights: Vec<u8>, device: &Device) -> Result<Self, Error> {
        let model = card.id.clone();
        let wrap = |source| Error::LoadWeights { model: model.clone(), source };
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, device).map_err(wrap)?;
        match build_network(&card.architecture, vb).map_err(wrap)? {
            Built::Classifier(net) => Self::from_network(card, net, device),
            Built::Segmenter(_) => Err(Error::Unsupported {
                reason: format!("model {model} is a segmentation model: load it with Registry::load_segmenter or Registry::load_any"),
            }),
        }
    }

    /// Wraps an already-built network (tests, sanity checks with randomised weights).
    pub fn from_network(card: ModelCard, net: Box<dyn Network>, device: &Device) -> Result<Self, Error> {
        if card.platt_count() != card.labels.len() && card.calibration.method == "platt" {
            return Err(Error::Unsupported { reason: "calibration parameters do not match the labels".into() });
        }
        Ok(Self { card, net, device: device.clone() })
    }

    pub fn card(&self) -> &ModelCard {
        &self.card
    }
    pub fn network(&self) -> &dyn Network {
        self.net.as_ref()
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn input_size(&self) -> usize {
        self.card.input.size
    }

    /// Input tensor `(B, C, S, S)` after checking every image's size.
    pub fn input_tensor(&self, images: &[&GrayImage]) -> Result<Tensor, Error> {
        let s = self.input_size();
        if images.is_empty() {
            return Err(Error::InvalidImage { reason: "no images".into() });
        }
        for img in images {
            if img.width() != s || img.height() != s {
                return Err(Error::InputSize { expected: s, width: img.width(), height: img.height() });
            }
        }
        Ok(batch_tensor(images, self.net.in_channels(), &self.device)?)
    }

    /// Raw logits `(B, labels)`.
    pub fn logits(&self, images: &[&GrayImage]) -> Result<Vec<Vec<f32>>, Error> {
        let x = self.input_tensor(images)?;
        Ok(self.net.forward(&x)?.to_vec2()?)
    }

    fn probabilities_from_logits(&self, logits: &[f32]) -> Vec<LabelProbability> {
        self.card
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let p = self.card.platt(i).apply(logits[i] as f64) as f32;
                LabelProbability { label: l.name.clone(), probability: p, threshold: l.threshold as f32, positive: p as f64 >= l.threshold }
            })
            .collect()
    }

    /// Calibrated probabilities for a batch of images.
    pub fn predict(&self, images: &[&GrayImage]) -> Result<Vec<Vec<LabelProbability>>, Error> {
        Ok(self.logits(images)?.iter().map(|z| self.probabilities_from_logits(z)).collect())
    }

    /// Saliency for one label with the given method.
    pub fn saliency(&self, image: &GrayImage, label: usize, method: &SaliencyMethod) -> Result<Saliency, Error> {
        let x = self.input_tensor(&[image])?;
        self.saliency_for(&x, label, method)
    }

    fn saliency_for(&self, x: &Tensor, label: usize, method: &SaliencyMethod) -> Result<Saliency, Error> {
        let name = &self.card.labels[label].name;
        let net = self.net.as_ref();
        Ok(match method {
            SaliencyMethod::GradCam => saliency::grad_cam(net, x, label, name)?,
            SaliencyMethod::IntegratedGradients { steps, baseline } => {
                if !net.input_differentiable() {
                    return Err(Error::Unsupported {
                        reason: format!(
                            "integrated gradients are not available for {} (no input gradient through its max-pool)",
                            self.card.id
                        ),
                    });
                }
                saliency::integrated_gradients(net, x, label, name, *steps, *baseline)?
            }
            SaliencyMethod::Occlusion { patch, stride, .. } => saliency::occlusion(net, x, label, name, *patch, *stride)?,
        })
    }

    /// ROAD of `map` and of a seeded per-pixel uniform random map (seed `options.seed`) for
    /// label `class` of the single image `x`, on the calibrated probability.
    pub fn road(&self, x: &Tensor, class: usize, map: &[f32], options: &RoadOptions) -> Result<RoadFaithfulness, Error> {
        let platt = self.card.platt(class);
        let score = move |z: f32| platt.apply(z as f64) as f32;
        let net = self.net.as_ref();
        let map_road = road::road(net, x, class, &score, map, options)?;
        let mut rng = Pcg32::new(options.seed, 0x7a4d);
        let random: Vec<f32> = (0..map.len()).map(|_| rng.uniform()).collect();
        let random_road = road::road(net, x, class, &score, &random, options)?;
        Ok(RoadFaithfulness { beats_random: map_road.combined > random_road.combined, map: map_road, random: random_road })
    }

    /// Probabilities, saliency for the target label and its deletion faithfulness.
    pub fn analyze(&self, image: &GrayImage, options: &AnalyzeOptions) -> Result<Analysis, Error> {
        let start = Instant::now();
        let x = self.input_tensor(&[image])?;
        let logits: Vec<f32> = self.net.forward(&x)?.flatten_all()?.to_vec1()?;
        let probabilities = self.probabilities_from_logits(&logits);
        let target = match &options.target {
            Some(name) => self.card.label_index(name).ok_or_else(|| Error::UnknownLabel { label: name.clone() })?,
            None => {
                (0..probabilities.len()).max_by(|&a, &b| probabilities[a].probability.total_cmp(&probabilities[b].probability)).unwrap_or(0)
            }
        };
        let saliency = self.saliency_for(&x, target, &options.method)?;
        let faithfulness = saliency::deletion_faithfulness(
            self.net.as_ref(),
            &x,
            target,
            self.card.platt(target),
            &saliency.map,
            options.deletion_steps,
            options.random_seed,
        )?;
        let road = match &options.road {
            Some(o) => Some(self.road(&x, target, &saliency.map, o)?),
            None => None,
        };
        Ok(Analysis {
            model_id: self.card.id.clone(),
            model_version: self.card.version.clone(),
            probabilities,
            saliency,
            faithfulness,
            road,
            runtime_ms: start.elapsed().as_secs_f64() * 1e3,
        })
    }
}

/// A network built from a card's architecture.
pub(crate) enum Built {
    Classifier(Box<dyn Network>),
    Segmenter(Box<BasicUNet>),
}

/// Builds the card's architecture from `vb` (weights by torchvision / MONAI names).
pub(crate) fn build_network(arch: &Architecture, vb: VarBuilder) -> candle_core::Result<Built> {
    Ok(match arch {
        Architecture::CompactCnn(cfg) => Built::Classifier(Box::new(CompactCnn::new(cfg, vb)?)),
        Architecture::Resnet(cfg) => Built::Classifier(Box::new(ResNet::new(cfg, vb)?)),
        Architecture::DenseNet(cfg) => Built::Classifier(Box::new(DenseNet::new(cfg, vb)?)),
        Architecture::EfficientNet(cfg) => Built::Classifier(Box::new(EfficientNet::new(cfg, vb)?)),
        Architecture::BasicUnet(cfg) => Built::Segmenter(Box::new(BasicUNet::new(cfg, vb)?)),
    })
}
