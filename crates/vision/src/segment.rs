//! Segmentation models ([`Segmenter`], a MONAI `BasicUNet`) and their results
//! ([`Segmentation`]): the per-pixel class map, one region per label with its area in pixels,
//! and the explanation — the mask itself plus a Grad-CAM of the mask score.
//!
//! Mask: per-pixel argmax over the output channels (channel 0 is background, channel `i` is
//! the card's label `i − 1`), exactly as PyTorch's `logits.argmax(1)` (ties go to the lower
//! channel). Grad-CAM of the mask score: the score is `Σ_ij logit_c(i, j) · mask_c(i, j)`
//! (pytorch-grad-cam's `SemanticSegmentationTarget`), backpropagated from the head to the
//! target layer `upcat_1`.
//!
//! Areas are in model-input pixels; the service converts them with the input pixel's size in
//! millimetres ([`area_mm2`]): `source PixelSpacing × source side / input side` per axis for
//! a letterboxed image.

use crate::card::{LabelCode, ModelCard};
use crate::error::Error;
use crate::image::GrayImage;
use crate::model::{Built, build_network};
use crate::nn::unet::BasicUNet;
use crate::saliency::{self, RawGradCam, Saliency, SaliencyMethod};
use crate::train::batch_tensor;
use candle_core::{DType, Device, IndexOp, Tensor, Var};
use candle_nn::VarBuilder;
use serde::Serialize;
use std::time::Instant;

/// A loaded segmentation model with its card. All methods take `&self`.
pub struct Segmenter {
    card: ModelCard,
    net: BasicUNet,
    device: Device,
}

impl std::fmt::Debug for Segmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segmenter").field("id", &self.card.id).field("version", &self.card.version).finish()
    }
}

/// One label's segmented region.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SegmentedRegion {
    pub label: String,
    pub code: Option<LabelCode>,
    /// Output channel (1-based; 0 is background).
    pub channel: usize,
    /// Pixels of the input assigned to this label.
    pub area_px: usize,
    /// Bounding box of those pixels (`None` when the region is empty).
    pub bbox: Option<saliency::BBox>,
}

/// Everything one segmentation produces.
#[derive(Debug, Clone, Serialize)]
pub struct Segmentation {
    pub model_id: String,
    pub model_version: String,
    pub width: usize,
    pub height: usize,
    /// Per-pixel output channel (0 = background), row-major, input resolution.
    pub class_map: Vec<u8>,
    pub regions: Vec<SegmentedRegion>,
    /// Grad-CAM of the mask score of `target` (the largest region unless chosen).
    pub saliency: Saliency,
    pub runtime_ms: f64,
}

impl Segmentation {
    /// The mask of the label at `index` (0-based label index, i.e. channel `index + 1`).
    pub fn mask(&self, index: usize) -> Vec<bool> {
        let c = (index + 1) as u8;
        self.class_map.iter().map(|&v| v == c).collect()
    }

    /// The mask of label `index` as an 8-bit grayscale PNG (255 inside, 0 outside).
    pub fn mask_png(&self, index: usize) -> Result<Vec<u8>, Error> {
        let data: Vec<f32> = self.mask(index).iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
        crate::render::grayscale_png(&data, self.width, self.height)
    }
}

/// Area in mm² of `area_px` input pixels, each `row_mm` × `col_mm` in size.
pub fn area_mm2(area_px: usize, row_mm: f64, col_mm: f64) -> f64 {
    area_px as f64 * row_mm * col_mm
}

/// Options for [`Segmenter::segment`]. Default: explain the label with the largest region.
#[derive(Debug, Clone, Default)]
pub struct SegmentOptions {
    pub target: Option<String>,
}

impl Segmenter {
    /// Builds a `basic-unet` card's network from safetensors bytes (already hash-checked by the
    /// registry; this does not check the hash).
    pub fn from_safetensors(card: ModelCard, weights: Vec<u8>, device: &Device) -> Result<Self, Error> {
        let model = card.id.clone();
        let wrap = |source| Error::LoadWeights { model: model.clone(), source };
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, device).map_err(wrap)?;
        match build_network(&card.architecture, vb).map_err(wrap)? {
            Built::Segmenter(net) => Self::from_network(card, *net, device),
            Built::Classifier(_) => {
                Err(Error::Unsupported { reason: format!("model {model} is a classifier: load it with Registry::load") })
            }
        }
    }

    /// Wraps an already-built network (tests, training).
    pub fn from_network(card: ModelCard, net: BasicUNet, device: &Device) -> Result<Self, Error> {
        if net.config().out_channels != card.labels.len() + 1 {
            return Err(Error::Unsupported {
                reason: format!("{} output channels for {} labels (+ background)", net.config().out_channels, card.labels.len()),
            });
        }
        Ok(Self { card, net, device: device.clone() })
    }

    pub fn card(&self) -> &ModelCard {
        &self.card
    }
    pub fn network(&self) -> &BasicUNet {
        &self.net
    }
    pub fn input_size(&self) -> usize {
        self.card.input.size
    }

    fn input_tensor(&self, image: &GrayImage) -> Result<Tensor, Error> {
        let s = self.input_size();
        if image.width() != s || image.height() != s {
            return Err(Error::InputSize { expected: s, width: image.width(), height: image.height() });
        }
        Ok(batch_tensor(&[image], self.net.in_channels(), &self.device)?)
    }

    /// Per-pixel logits `(channels, H, W)` as nested vectors (tests, parity checks).
    pub fn logits(&self, image: &GrayImage) -> Result<Vec<Vec<Vec<f32>>>, Error> {
        Ok(self.net.forward(&self.input_tensor(image)?)?.squeeze(0)?.to_vec3()?)
    }

    /// Segments one image and explains the target label's mask.
    pub fn segment(&self, image: &GrayImage, options: &SegmentOptions) -> Result<Segmentation, Error> {
        let start = Instant::now();
        let x = self.input_tensor(image)?;
        let a = self.net.features(&x)?.detach();
        let logits = self.net.head(&a)?;
        let (_, _, h, w) = logits.dims4()?;
        let class_map: Vec<u8> = logits.argmax(1)?.flatten_all()?.to_dtype(DType::U8)?.to_vec1()?;
        let regions: Vec<SegmentedRegion> = self
            .card
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let c = (i + 1) as u8;
                let mut bbox: Option<saliency::BBox> = None;
                let mut area = 0;
                for (p, _) in class_map.iter().enumerate().filter(|&(_, &v)| v == c) {
                    area += 1;
                    let (px, py) = (p % w, p / w);
                    bbox = Some(match bbox {
                        None => saliency::BBox { x0: px, y0: py, x1: px, y1: py },
                        Some(b) => saliency::BBox { x0: b.x0.min(px), y0: b.y0.min(py), x1: b.x1.max(px), y1: b.y1.max(py) },
                    });
                }
                SegmentedRegion { label: l.name.clone(), code: l.code.clone(), channel: i + 1, area_px: area, bbox }
            })
            .collect();
        let target = match &options.target {
            Some(name) => self.card.label_index(name).ok_or_else(|| Error::UnknownLabel { label: name.clone() })?,
            None => (0..regions.len()).max_by_key(|&i| (regions[i].area_px, std::cmp::Reverse(i))).unwrap_or(0),
        };
        let mask: Vec<f32> = class_map.iter().map(|&v| if v as usize == target + 1 { 1.0 } else { 0.0 }).collect();
        let raw = grad_cam_mask_raw(&self.net, &a, target + 1, &mask)?;
        let map = saliency::resize_bilinear(&raw.map, raw.w, raw.h, w, h);
        let saliency =
            saliency::finish_map(&self.card.labels[target].name, SaliencyMethod::GradCam, Some(self.net.target_layer()), map, w, h);
        Ok(Segmentation {
            model_id: self.card.id.clone(),
            model_version: self.card.version.clone(),
            width: w,
            height: h,
            class_map,
            regions,
            saliency,
            runtime_ms: start.elapsed().as_secs_f64() * 1e3,
        })
    }
}

/// Raw Grad-CAM of the mask score `Σ_ij logit_channel(i, j) · mask(i, j)` at the target layer,
/// from its (detached) activations `a` `(1, K, h, w)`.
pub fn grad_cam_mask_raw(net: &BasicUNet, a: &Tensor, channel: usize, mask: &[f32]) -> candle_core::Result<RawGradCam> {
    let var = Var::from_tensor(a)?;
    let logits = net.head(var.as_tensor())?;
    let (_, _, h, w) = logits.dims4()?;
    let m = Tensor::from_slice(mask, (h, w), a.device())?;
    let y = logits.i((0, channel))?.mul(&m)?.sum_all()?;
    saliency::grad_cam_from(a, &var, &y)
}
