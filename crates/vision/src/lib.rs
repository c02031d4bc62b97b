//! # radsight-vision: imaging models, their registry, and explanations
//!
//! This crate turns a normalised single-channel image into calibrated finding probabilities
//! and an explanation of them. It knows nothing about DICOM, FHIR or the service: the service
//! decodes and letterboxes pixels into a [`GrayImage`] (values in [0, 1], the model's square
//! input size), calls [`Model::analyze`], and maps the saliency map back to source coordinates.
//!
//! ## Design
//! - **Registry** ([`registry`]): `models/<id>/` holds `model-card.toml` ([`card::ModelCard`]),
//!   `weights.safetensors` and `weights.sha256`. [`Registry::load`] refuses weights whose
//!   SHA-256 differs from the card with [`Error::WeightsHashMismatch`]; [`Registry::route`]
//!   picks models by modality, body part and procedure code.
//! - **Networks** ([`nn`]): every network implements [`nn::Network`], split at the saliency
//!   target layer into `features(x) -> A` and `head(A) -> logits`. The shipped family is a
//!   compact strided CNN ([`nn::compact`]); ResNet-18/34/50 with torchvision weight names
//!   ([`nn::resnet`]) load and run for imported models. BatchNorm is folded into convolutions at
//!   load time, so inference is conv + ReLU + GAP + linear. CPU by default; the `cuda` feature
//!   forwards to candle's.
//! - **Calibration**: logits go through the card's per-label Platt scaling, fitted on a
//!   calibration split disjoint from training and test ([`metrics::Platt`]); thresholds in the
//!   card apply to the calibrated probability.
//! - **Saliency** ([`saliency`]): Grad-CAM (default) wraps `A` in a candle `Var` and
//!   backpropagates the target logit through the head; integrated gradients wrap the input;
//!   occlusion uses forward passes only. Each result records its [`SaliencyMethod`] and
//!   parameters, the peak, and the bounding box of the half-maximum region around it.
//! - **Faithfulness**: every analysis reports the deletion AUC of its map and of a seeded
//!   random map on the same image ([`saliency::Faithfulness`]), and ROAD (remove and debias,
//!   as pytorch-grad-cam implements it) of both ([`road`], [`model::RoadFaithfulness`]).
//! - **Import** ([`import`]): a PyTorch state dict as safetensors plus a description become a
//!   registry entry; DenseNet-121 ([`nn::densenet`]), EfficientNet-B0 ([`nn::efficientnet`])
//!   and ResNets take torchvision names, the 2-D U-Net ([`nn::unet`]) MONAI `BasicUNet` names.
//! - **Segmentation** ([`segment`]): a U-Net's mask per label with its area in pixels, and
//!   Grad-CAM of the mask score; [`Registry::load_any`] loads either kind.
//! - **Rendering** ([`render`]): grayscale PNG and a viridis overlay PNG.
//! - **Shipped model**: `radsight-phantom-cxr`, trained by [`train::train`] on deterministic
//!   synthetic phantoms ([`phantom`]). It is a demonstration model, not for clinical use.
//!
//! **Invariant:** weights are used only after their hash matched the card.
//! **Invariant:** everything random is seeded ([`rng::Pcg32`]); candle's RNG is never used.
//! **Boundary:** inputs are pixels and label names only — no patient data enters this crate,
//! and none of its errors or outputs carry any.

pub mod card;
pub mod error;
pub mod image;
pub mod import;
pub mod metrics;
pub mod model;
pub mod nn;
pub mod phantom;
pub mod registry;
pub mod render;
pub mod rng;
pub mod road;
pub mod saliency;
pub mod segment;
pub mod segment_train;
pub mod train;

// Re-exported so callers and tests use the same candle version as the crate.
pub use candle_core;
pub use candle_nn;

pub use card::ModelCard;
pub use error::Error;
pub use image::GrayImage;
pub use model::{Analysis, AnalyzeOptions, LabelProbability, Model, RoadFaithfulness};
pub use registry::LoadedModel;
pub use registry::Registry;
pub use road::{Road, RoadOptions};
pub use saliency::{BBox, Faithfulness, Point, Saliency, SaliencyMethod};
pub use segment::{SegmentOptions, Segmentation, Segmenter};
