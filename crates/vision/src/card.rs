//! The model card (`model-card.toml`): everything a reader, the registry and the service need to
//! know about a model — identity, architecture, input contract, labels and thresholds, intended
//! use and limitations, training data, calibration, held-out validation metrics, saliency
//! method, and the weights' SHA-256.

use crate::metrics::Platt;
use crate::nn::compact::CompactCnnConfig;
use crate::nn::densenet::DenseNetConfig;
use crate::nn::efficientnet::EfficientNetConfig;
use crate::nn::resnet::ResNetConfig;
use crate::nn::unet::BasicUNetConfig;
use serde::{Deserialize, Serialize};

/// The card file's name inside a model folder.
pub const CARD_FILE: &str = "model-card.toml";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelCard {
    /// Stable identifier: lowercase ASCII letters, digits and `-`.
    pub id: String,
    /// Semantic version `MAJOR.MINOR.PATCH`.
    pub version: String,
    pub name: String,
    /// One-paragraph plain-language summary (shown to clinicians).
    pub summary: String,
    /// `demonstration`, `investigational` or `cleared`.
    pub status: String,
    pub architecture: Architecture,
    pub input: InputSpec,
    pub applies_to: AppliesTo,
    pub labels: Vec<LabelSpec>,
    pub intended_use: IntendedUse,
    pub training: TrainingInfo,
    pub calibration: Calibration,
    pub validation: Validation,
    pub saliency: SaliencySpec,
    pub weights: WeightsSpec,
}

/// Architecture and hyper-parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Architecture {
    CompactCnn(CompactCnnConfig),
    Resnet(ResNetConfig),
    /// DenseNet-121 family, torchvision names.
    #[serde(rename = "densenet")]
    DenseNet(DenseNetConfig),
    /// EfficientNet-B0, torchvision names.
    #[serde(rename = "efficientnet")]
    EfficientNet(EfficientNetConfig),
    /// 2-D U-Net with MONAI `BasicUNet` names (segmentation).
    #[serde(rename = "basic-unet")]
    BasicUnet(BasicUNetConfig),
}

impl Architecture {
    /// Whether the model segments (per-pixel classes) rather than classifies.
    pub fn is_segmentation(&self) -> bool {
        matches!(self, Architecture::BasicUnet(_))
    }

    /// The architecture's name as the card writes it.
    pub fn name(&self) -> &'static str {
        match self {
            Architecture::CompactCnn(_) => "compact-cnn",
            Architecture::Resnet(_) => "resnet",
            Architecture::DenseNet(_) => "densenet",
            Architecture::EfficientNet(_) => "efficientnet",
            Architecture::BasicUnet(_) => "basic-unet",
        }
    }
}

/// What the service must feed the model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InputSpec {
    /// Square input side in pixels; the service letterboxes to it.
    pub size: usize,
    pub channels: usize,
    /// How pixel values are brought to [0, 1] before the model (the model standardises itself).
    pub normalisation: String,
    /// Windowing the service applies before normalising.
    pub windowing: String,
    pub photometric: String,
    /// How the service brings the image to `size`×`size`: `letterbox` (the default: scale the
    /// long side, pad), `resize` (stretch) or `center-crop` (scale the short side, crop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<String>,
    /// The value range the network was trained on, e.g. TorchXRayVision's `[-1024, 1024]`;
    /// informational (the network maps [0, 1] to it itself, see the architecture's
    /// `input_mean`/`input_std`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intensity_range: Option<[f64; 2]>,
    /// Per-channel normalisation applied after the intensity range; informational, as above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f64>>,
}

/// Routing: which studies the model applies to. An empty list matches anything.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct AppliesTo {
    /// DICOM Modality (0008,0060) values, e.g. `CR`, `DX`.
    pub modalities: Vec<String>,
    /// DICOM Body Part Examined (0018,0015) values, e.g. `CHEST`.
    pub body_parts: Vec<String>,
    /// Procedure codes (e.g. from the order's OBR-4 / ImagingStudy.procedureCode).
    #[serde(default)]
    pub procedure_codes: Vec<String>,
}

impl AppliesTo {
    /// Case-insensitive match; an empty list in the card matches any value, and a missing
    /// value (`None`) matches only an empty list.
    pub fn matches(&self, modality: Option<&str>, body_part: Option<&str>, procedure_code: Option<&str>) -> bool {
        fn one(list: &[String], value: Option<&str>) -> bool {
            list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x.eq_ignore_ascii_case(v.trim())))
        }
        one(&self.modalities, modality) && one(&self.body_parts, body_part) && one(&self.procedure_codes, procedure_code)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LabelSpec {
    pub name: String,
    pub description: String,
    /// Decision threshold on the calibrated probability.
    pub threshold: f64,
    /// How the threshold was chosen.
    pub threshold_rule: String,
    /// A code for the finding (SNOMED CT or RadLex where one exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<LabelCode>,
}

/// A coded concept, as a FHIR `Coding` carries it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LabelCode {
    /// Code system URI, e.g. `http://snomed.info/sct` or `http://radlex.org`.
    pub system: String,
    pub code: String,
    pub display: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IntendedUse {
    pub purpose: String,
    pub users: String,
    pub not_for_clinical_use: bool,
    pub limitations: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainingInfo {
    pub data: String,
    /// Seed of the training split; calibration and test splits use their own seeds.
    pub seed: u64,
    pub images: u64,
    pub steps: u64,
    pub batch_size: u64,
    pub optimiser: String,
    pub loss: String,
    pub duration_seconds: f64,
    pub machine: String,
    /// Free-form generator/parameters record (JSON text), enough to regenerate the data.
    pub generator: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    /// `platt` (σ(a·logit + b) per label) or `none`.
    pub method: String,
    pub fitted_on: String,
    pub n: u64,
    pub params: Vec<LabelPlatt>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LabelPlatt {
    pub label: String,
    pub a: f64,
    pub b: f64,
}

impl LabelPlatt {
    pub fn platt(&self) -> Platt {
        Platt { a: self.a, b: self.b }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Validation {
    pub dataset: String,
    pub n: u64,
    pub labels: Vec<LabelMetrics>,
}

/// Held-out metrics for one label; probabilities are the calibrated ones.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LabelMetrics {
    pub label: String,
    pub n_positive: u64,
    pub auroc: f64,
    pub threshold: f64,
    pub sensitivity: f64,
    pub specificity: f64,
    /// Expected calibration error, 10 equal-width bins, calibrated probabilities.
    pub ece: f64,
    /// The same before calibration (σ(logit)), for comparison.
    pub ece_uncalibrated: f64,
    pub brier: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SaliencySpec {
    pub default_method: String,
    pub target_layer: String,
    pub notes: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WeightsSpec {
    pub file: String,
    pub format: String,
    pub dtype: String,
    /// Lowercase hex SHA-256 of the weights file.
    pub sha256: String,
}

impl ModelCard {
    /// Parses a card and checks the fields the registry relies on.
    pub fn parse(text: &str) -> Result<Self, String> {
        let card: ModelCard = toml::from_str(text).map_err(|e| e.to_string())?;
        card.check()?;
        Ok(card)
    }

    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string_pretty(self).map_err(|e| e.to_string())
    }

    fn check(&self) -> Result<(), String> {
        if self.id.is_empty() || !self.id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            return Err(format!("id {:?} must be lowercase ASCII letters, digits and '-'", self.id));
        }
        let parts: Vec<&str> = self.version.split('.').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit())) {
            return Err(format!("version {:?} is not MAJOR.MINOR.PATCH", self.version));
        }
        if self.weights.sha256.len() != 64 || !self.weights.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err("weights.sha256 must be 64 hex digits".into());
        }
        if self.weights.file.contains('/') || self.weights.file.contains('\\') || self.weights.file.starts_with('.') {
            return Err("weights.file must be a plain file name inside the model folder".into());
        }
        if self.labels.is_empty() {
            return Err("a model needs at least one label".into());
        }
        if self.calibration.method == "platt" && self.calibration.params.len() != self.labels.len() {
            return Err("platt calibration needs one (a, b) per label".into());
        }
        Ok(())
    }

    /// The calibration for label `i` (identity when the card has none).
    pub fn platt(&self, i: usize) -> Platt {
        match self.calibration.method.as_str() {
            "platt" => self.calibration.params[i].platt(),
            _ => Platt::IDENTITY,
        }
    }

    pub fn platt_count(&self) -> usize {
        self.calibration.params.len()
    }

    pub fn label_index(&self, name: &str) -> Option<usize> {
        self.labels.iter().position(|l| l.name == name)
    }
}
