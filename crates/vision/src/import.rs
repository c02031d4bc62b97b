//! Import of a model trained in PyTorch: a state dict saved as safetensors (torchvision or
//! MONAI tensor names, as `scripts/export_torch.py` writes it) plus a small description
//! ([`ModelDescription`], TOML or JSON) become a registry entry `registry_dir/<id>/` with
//! `model-card.toml`, `weights.safetensors` (float32, exactly the tensors the architecture
//! uses) and `weights.sha256`, which [`crate::Registry`] loads.
//!
//! Checks, in this order, each refusing with an [`ImportError`] that names what failed:
//! 1. the description parses, names a known architecture and has at least one label, and its
//!    preprocessing and calibration are consistent with its channels and labels;
//! 2. every tensor the architecture asks for is in the file, in the order the network is built
//!    (the first missing one is named), with the shape it expects (the first mis-shaped one is
//!    named with both shapes);
//! 3. each tensor is floating point: float32 is kept, float16 / bfloat16 / float64 are
//!    converted to float32 (recorded in the card's `weights.dtype`), anything else is refused;
//! 4. the file holds no other tensors (BatchNorm's `num_batches_tracked` aside), as PyTorch's
//!    `load_state_dict(strict=True)` would insist;
//! 5. the model is built from the written bytes and runs one forward pass on a blank image.
//!
//! **Invariant:** a registry entry appears atomically: it is assembled in a hidden folder,
//! renamed to `<id>/`, and its card is moved into place last, so a registry opened meanwhile
//! either ignores the folder (no card yet) or sees a complete entry. An existing `<id>/` is
//! never overwritten. radsight never unpickles: only safetensors is read.
//!
//! Preprocessing: the service always hands the network [0, 1] pixels. A description's
//! `intensity_range = [lo, hi]` (TorchXRayVision: `[-1024, 1024]`) and `mean`/`std` (applied
//! after it, ImageNet style) are folded into the network's own standardisation:
//! `input_mean = (mean − lo) / (hi − lo)`, `input_std = std / (hi − lo)`.

use crate::card::{
    AppliesTo, Architecture, CARD_FILE, Calibration, InputSpec, IntendedUse, LabelCode, LabelPlatt, LabelSpec, ModelCard, SaliencySpec,
    TrainingInfo, Validation, WeightsSpec,
};
use crate::image::GrayImage;
use crate::model::{Built, Model, build_network};
use crate::nn::densenet::DenseNetConfig;
use crate::nn::efficientnet::EfficientNetConfig;
use crate::nn::resnet::ResNetConfig;
use crate::nn::unet::BasicUNetConfig;
use crate::segment::{SegmentOptions, Segmenter};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The file names inside a registry entry.
pub const WEIGHTS_FILE: &str = "weights.safetensors";

/// Architectures an import may name (torchvision / MONAI spelling; `-` and `_` are equal).
pub const ARCHITECTURES: [&str; 6] = ["densenet121", "efficientnet_b0", "resnet18", "resnet34", "resnet50", "basic_unet"];

/// What the importer says about its model (the import's second input).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDescription {
    pub id: String,
    pub version: String,
    pub name: String,
    #[serde(default)]
    pub summary: String,
    /// `investigational` unless stated (`demonstration`, `investigational`, `cleared`).
    #[serde(default = "default_status")]
    pub status: String,
    /// One of [`ARCHITECTURES`].
    pub architecture: String,
    /// `basic_unet` only: MONAI's six feature counts (default `[32, 32, 64, 128, 256, 32]`).
    #[serde(default)]
    pub unet_features: Option<Vec<usize>>,
    pub input: InputDescription,
    /// Classifier: one per output. Segmenter: one per foreground channel (channel 0 is
    /// background).
    #[serde(default)]
    pub labels: Vec<LabelDescription>,
    #[serde(default)]
    pub calibration: Option<CalibrationDescription>,
    #[serde(default)]
    pub applies_to: AppliesTo,
    #[serde(default)]
    pub intended_use: Option<IntendedUse>,
    /// Where the weights come from and what they were trained on (free text, kept in the card).
    #[serde(default)]
    pub training_data: Option<String>,
}

fn default_status() -> String {
    "investigational".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputDescription {
    pub size: usize,
    pub channels: usize,
    /// `letterbox` (default), `resize` or `center-crop`.
    #[serde(default)]
    pub resize: Option<String>,
    /// The value range [0, 1] pixels are mapped to before `mean`/`std` (default `[0, 1]`).
    #[serde(default)]
    pub intensity_range: Option<[f64; 2]>,
    /// One value, or one per channel (default 0).
    #[serde(default)]
    pub mean: Option<Vec<f64>>,
    /// One value, or one per channel (default 1).
    #[serde(default)]
    pub std: Option<Vec<f64>>,
    #[serde(default)]
    pub windowing: Option<String>,
    #[serde(default)]
    pub photometric: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelDescription {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub code: Option<LabelCode>,
    /// Decision threshold on the (calibrated) probability; 0.5 unless stated.
    #[serde(default)]
    pub threshold: Option<f64>,
    #[serde(default)]
    pub threshold_rule: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationDescription {
    /// `platt` or `none`.
    pub method: String,
    #[serde(default)]
    pub fitted_on: String,
    #[serde(default)]
    pub n: u64,
    #[serde(default)]
    pub params: Vec<LabelPlatt>,
}

/// What [`import_model`] wrote.
#[derive(Debug, Clone)]
pub struct ImportedModel {
    pub id: String,
    pub version: String,
    pub dir: PathBuf,
    /// SHA-256 of the written `weights.safetensors`.
    pub sha256: String,
    pub tensors: usize,
    /// The source dtypes converted to float32 (empty when all were float32).
    pub converted_from: Vec<String>,
    pub card: ModelCard,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing the description {path}: {reason}")]
    ParseDescription { path: PathBuf, reason: String },
    #[error("unknown architecture {architecture:?} (known: {})", ARCHITECTURES.join(", "))]
    UnknownArchitecture { architecture: String },
    #[error("the description lists no labels")]
    MissingLabels,
    #[error("invalid description: {reason}")]
    InvalidDescription { reason: String },
    #[error("reading the weights {path} as safetensors: {reason}")]
    ReadWeights { path: PathBuf, reason: String },
    #[error("tensor {name} is missing (the {architecture} expects shape {expected:?})")]
    MissingTensor { name: String, architecture: String, expected: Vec<usize> },
    #[error("tensor {name} has shape {found:?}, the {architecture} expects {expected:?}")]
    TensorShape { name: String, architecture: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("tensor {name} has dtype {dtype:?}; only float32, float16, bfloat16 and float64 weights can be imported")]
    TensorDtype { name: String, dtype: String },
    #[error("tensor {name} is not part of the {architecture} (a different architecture or extra heads?)")]
    UnexpectedTensor { name: String, architecture: String },
    #[error("model {id} already exists in the registry ({dir}); choose another id or version folder")]
    AlreadyExists { id: String, dir: PathBuf },
    #[error("the imported model does not load or run")]
    Verify(#[source] crate::Error),
}

/// Imports `weights` (safetensors) described by `description` (TOML, or JSON when the file
/// ends in `.json`) into `registry_dir/<id>/`. See the module docs for the checks.
pub fn import_model(weights: &Path, description: &Path, registry_dir: &Path) -> Result<ImportedModel, ImportError> {
    let text = std::fs::read_to_string(description).map_err(|source| ImportError::ReadFile { path: description.into(), source })?;
    let desc: ModelDescription = if description.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
        serde_json::from_str(&text).map_err(|e| ImportError::ParseDescription { path: description.into(), reason: e.to_string() })?
    } else {
        toml::from_str(&text).map_err(|e| ImportError::ParseDescription { path: description.into(), reason: e.to_string() })?
    };
    let bytes = std::fs::read(weights).map_err(|source| ImportError::ReadFile { path: weights.into(), source })?;
    import_from_parts(&desc, &bytes, weights, registry_dir)
}

/// [`import_model`] on an already-parsed description and the weights' bytes (`source` names
/// them in errors and in the card).
pub fn import_from_parts(desc: &ModelDescription, bytes: &[u8], source: &Path, registry_dir: &Path) -> Result<ImportedModel, ImportError> {
    let architecture = architecture_of(desc)?;
    let arch_name = normalise_arch(&desc.architecture);
    let dir = registry_dir.join(&desc.id);
    if dir.exists() {
        return Err(ImportError::AlreadyExists { id: desc.id.clone(), dir });
    }
    let expected = expected_tensors(&architecture).map_err(|e| ImportError::InvalidDescription { reason: e.to_string() })?;
    let read_err = |reason: String| ImportError::ReadWeights { path: source.into(), reason };
    let file = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| read_err(e.to_string()))?;

    let mut out: HashMap<String, Tensor> = HashMap::new();
    let mut converted: Vec<String> = Vec::new();
    for (name, shape) in &expected {
        let t = file.get(name).ok_or_else(|| ImportError::MissingTensor {
            name: name.clone(),
            architecture: arch_name.clone(),
            expected: shape.clone(),
        })?;
        if t.dims() != shape.as_slice() {
            return Err(ImportError::TensorShape {
                name: name.clone(),
                architecture: arch_name.clone(),
                expected: shape.clone(),
                found: t.dims().to_vec(),
            });
        }
        let t = match t.dtype() {
            DType::F32 => t.clone(),
            d @ (DType::F16 | DType::BF16 | DType::F64) => {
                let d = format!("{d:?}");
                if !converted.contains(&d) {
                    converted.push(d);
                }
                t.to_dtype(DType::F32).map_err(|e| read_err(e.to_string()))?
            }
            d => {
                return Err(ImportError::TensorDtype { name: name.clone(), dtype: format!("{d:?}") });
            }
        };
        out.insert(name.clone(), t);
    }
    let mut extra: Vec<&String> = file.keys().filter(|k| !out.contains_key(*k) && !k.ends_with("num_batches_tracked")).collect();
    extra.sort();
    if let Some(name) = extra.first() {
        return Err(ImportError::UnexpectedTensor { name: (*name).clone(), architecture: arch_name });
    }

    // Assemble in a hidden folder, then rename (see the module's invariant).
    let staging = registry_dir.join(format!(".{}.importing", desc.id));
    let _ = std::fs::remove_dir_all(&staging);
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImportError::WriteFile { path, source }
    };
    std::fs::create_dir_all(&staging).map_err(write_err(&staging))?;
    let result = (|| {
        let weights_path = staging.join(WEIGHTS_FILE);
        candle_core::safetensors::save(&out, &weights_path)
            .map_err(|e| ImportError::WriteFile { path: weights_path.clone(), source: std::io::Error::other(e.to_string()) })?;
        let written = std::fs::read(&weights_path).map_err(|source| ImportError::ReadFile { path: weights_path.clone(), source })?;
        let sha256 = hex::encode(Sha256::digest(&written));
        let source_sha = hex::encode(Sha256::digest(bytes));
        let dtype = if converted.is_empty() { "F32".to_string() } else { format!("F32 (converted from {})", converted.join(", ")) };
        let card = card_for(desc, architecture.clone(), &sha256, &dtype, source, &source_sha)?;
        verify(&card, written)?;
        let sha_path = staging.join("weights.sha256");
        std::fs::write(&sha_path, format!("{sha256}  {WEIGHTS_FILE}\n")).map_err(write_err(&sha_path))?;
        let pending = staging.join(format!("{CARD_FILE}.pending"));
        std::fs::write(&pending, card.to_toml().map_err(|reason| ImportError::InvalidDescription { reason })?)
            .map_err(write_err(&pending))?;
        Ok((card, sha256))
    })();
    let (card, sha256) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    std::fs::rename(&staging, &dir).map_err(write_err(&dir))?;
    let card_path = dir.join(CARD_FILE);
    std::fs::rename(dir.join(format!("{CARD_FILE}.pending")), &card_path).map_err(write_err(&card_path))?;
    Ok(ImportedModel {
        id: card.id.clone(),
        version: card.version.clone(),
        dir,
        sha256,
        tensors: out.len(),
        converted_from: converted,
        card,
    })
}

fn normalise_arch(a: &str) -> String {
    a.trim().to_ascii_lowercase().replace('-', "_")
}

/// Broadcasts a one-or-per-channel list.
fn per_channel(v: &Option<Vec<f64>>, default: f64, channels: usize, what: &str) -> Result<Vec<f64>, ImportError> {
    match v {
        None => Ok(vec![default; channels]),
        Some(v) if v.len() == 1 => Ok(vec![v[0]; channels]),
        Some(v) if v.len() == channels => Ok(v.clone()),
        Some(v) => Err(ImportError::InvalidDescription { reason: format!("input.{what} has {} values for {channels} channels", v.len()) }),
    }
}

/// The card architecture a description asks for, with the preprocessing folded in.
pub fn architecture_of(desc: &ModelDescription) -> Result<Architecture, ImportError> {
    let arch = normalise_arch(&desc.architecture);
    if !ARCHITECTURES.contains(&arch.as_str()) {
        return Err(ImportError::UnknownArchitecture { architecture: desc.architecture.clone() });
    }
    if desc.labels.is_empty() {
        return Err(ImportError::MissingLabels);
    }
    let invalid = |reason: String| ImportError::InvalidDescription { reason };
    let c = desc.input.channels;
    if c == 0 || c > 4 {
        return Err(invalid(format!("input.channels = {c}")));
    }
    if desc.input.size < 16 || desc.input.size > 2048 {
        return Err(invalid(format!("input.size = {} (16..=2048)", desc.input.size)));
    }
    let [lo, hi] = desc.input.intensity_range.unwrap_or([0.0, 1.0]);
    if hi <= lo || !lo.is_finite() || !hi.is_finite() {
        return Err(invalid(format!("input.intensity_range [{lo}, {hi}] is empty")));
    }
    let mean = per_channel(&desc.input.mean, 0.0, c, "mean")?;
    let std = per_channel(&desc.input.std, 1.0, c, "std")?;
    if std.iter().any(|&s| s <= 0.0 || s.is_nan()) {
        return Err(invalid("input.std must be positive".into()));
    }
    let input_mean: Vec<f32> = mean.iter().map(|m| ((m - lo) / (hi - lo)) as f32).collect();
    let input_std: Vec<f32> = std.iter().map(|s| (s / (hi - lo)) as f32).collect();
    if let Some(r) = &desc.input.resize
        && !["letterbox", "resize", "center-crop"].contains(&r.as_str())
    {
        return Err(invalid(format!("input.resize {r:?} (letterbox, resize, center-crop)")));
    }
    let mut names = std::collections::HashSet::new();
    for l in &desc.labels {
        if l.name.trim().is_empty() || !names.insert(l.name.as_str()) {
            return Err(invalid(format!("label name {:?} is empty or repeated", l.name)));
        }
        if let Some(t) = l.threshold
            && !(0.0..=1.0).contains(&t)
        {
            return Err(invalid(format!("label {}: threshold {t} outside [0, 1]", l.name)));
        }
    }
    if let Some(cal) = &desc.calibration {
        match cal.method.as_str() {
            "none" => {}
            "platt" => {
                if cal.params.len() != desc.labels.len() || cal.params.iter().zip(&desc.labels).any(|(p, l)| p.label != l.name) {
                    return Err(invalid("platt calibration needs one {label, a, b} per label, in label order".into()));
                }
            }
            m => return Err(invalid(format!("calibration.method {m:?} (platt, none)"))),
        }
    }
    let n = desc.labels.len();
    Ok(match arch.as_str() {
        "densenet121" => Architecture::DenseNet(DenseNetConfig { input_mean, input_std, ..DenseNetConfig::densenet121(c, n) }),
        "efficientnet_b0" => Architecture::EfficientNet(EfficientNetConfig { input_mean, input_std, ..EfficientNetConfig::b0(c, n) }),
        "basic_unet" => {
            let mut cfg = BasicUNetConfig { input_mean, input_std, ..BasicUNetConfig::new(c, n + 1) };
            if let Some(f) = &desc.unet_features {
                cfg.features = f.clone();
            }
            if !desc.input.size.is_multiple_of(16) {
                return Err(invalid(format!("basic_unet needs input.size a multiple of 16, got {}", desc.input.size)));
            }
            Architecture::BasicUnet(cfg)
        }
        r => {
            let depth: usize = r
                .trim_start_matches("resnet")
                .parse()
                .map_err(|_| ImportError::UnknownArchitecture { architecture: desc.architecture.clone() })?;
            Architecture::Resnet(ResNetConfig { input_mean, input_std, ..ResNetConfig::new(depth, c, n) })
        }
    })
}

/// Tensor names and shapes in request order.
type Requests = Arc<Mutex<Vec<(String, Vec<usize>)>>>;

/// Records each tensor a network asks for, in order, and hands back zeros.
struct Recorder(Requests);

impl SimpleBackend for Recorder {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.lock().expect("recorder lock").push((name.to_string(), s.dims().to_vec()));
        Tensor::zeros(s, dtype, dev)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("tensor {name}: shape unknown")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// The tensors (name, shape) an architecture loads, in the order it loads them.
pub fn expected_tensors(arch: &Architecture) -> candle_core::Result<Vec<(String, Vec<usize>)>> {
    let names = Arc::new(Mutex::new(Vec::new()));
    let vb = VarBuilder::from_backend(Box::new(Recorder(names.clone())), DType::F32, Device::Cpu);
    build_network(arch, vb)?;
    let mut v = names.lock().expect("recorder lock").clone();
    let mut seen = std::collections::HashSet::new();
    v.retain(|(n, _)| seen.insert(n.clone()));
    Ok(v)
}

fn card_for(
    desc: &ModelDescription,
    architecture: Architecture,
    sha256: &str,
    dtype: &str,
    source: &Path,
    source_sha: &str,
) -> Result<ModelCard, ImportError> {
    let target_layer = match build_network(&architecture, VarBuilder::zeros(DType::F32, &Device::Cpu))
        .map_err(|e| ImportError::InvalidDescription { reason: e.to_string() })?
    {
        Built::Classifier(n) => n.target_layer(),
        Built::Segmenter(n) => n.target_layer(),
    };
    let segmentation = architecture.is_segmentation();
    let calibration = match &desc.calibration {
        Some(c) => Calibration { method: c.method.clone(), fitted_on: c.fitted_on.clone(), n: c.n, params: c.params.clone() },
        None => Calibration { method: "none".into(), fitted_on: "not stated by the importer".into(), n: 0, params: vec![] },
    };
    let input = &desc.input;
    let card = ModelCard {
        id: desc.id.clone(),
        version: desc.version.clone(),
        name: desc.name.clone(),
        summary: desc.summary.clone(),
        status: desc.status.clone(),
        architecture,
        input: InputSpec {
            size: input.size,
            channels: input.channels,
            normalisation: "pixel values scaled to [0, 1] after windowing (0 = black); the network maps them to the trained intensity range and standardises internally with (x - input_mean) / input_std".into(),
            windowing: input.windowing.clone().unwrap_or_else(|| "the DICOM VOI LUT / first window (or full range) mapped to [0, 1]".into()),
            photometric: input.photometric.clone().unwrap_or_else(|| "MONOCHROME2 (bright = dense)".into()),
            resize: Some(input.resize.clone().unwrap_or_else(|| "letterbox".into())),
            intensity_range: input.intensity_range,
            mean: input.mean.clone(),
            std: input.std.clone(),
        },
        applies_to: desc.applies_to.clone(),
        labels: desc
            .labels
            .iter()
            .map(|l| LabelSpec {
                name: l.name.clone(),
                description: l.description.clone(),
                threshold: l.threshold.unwrap_or(0.5),
                threshold_rule: l.threshold_rule.clone().unwrap_or_else(|| if l.threshold.is_some() { "stated by the importer".into() } else { "default 0.5 (none stated by the importer)".into() }),
                code: l.code.clone(),
            })
            .collect(),
        intended_use: desc.intended_use.clone().unwrap_or_else(|| IntendedUse {
            purpose: "not stated by the importer".into(),
            users: "not stated by the importer".into(),
            not_for_clinical_use: true,
            limitations: vec!["Imported model: radsight checked its weights against the architecture, not its clinical performance.".into()],
        }),
        training: TrainingInfo {
            data: desc.training_data.clone().unwrap_or_else(|| "not stated by the importer".into()),
            seed: 0,
            images: 0,
            steps: 0,
            batch_size: 0,
            optimiser: "not stated (imported)".into(),
            loss: "not stated (imported)".into(),
            duration_seconds: 0.0,
            machine: "not stated (imported)".into(),
            generator: serde_json::json!({
                "imported_from": source.file_name().map(|f| f.to_string_lossy().to_string()),
                "source_sha256": source_sha,
                "architecture": desc.architecture,
            })
            .to_string(),
        },
        calibration,
        validation: Validation { dataset: "none: imported model, not validated by radsight".into(), n: 0, labels: vec![] },
        saliency: SaliencySpec {
            default_method: "grad-cam".into(),
            target_layer,
            notes: if segmentation { "the mask itself, plus Grad-CAM of the mask score (sum of the class logit over the mask)".into() } else { "Grad-CAM of the label's logit".into() },
        },
        weights: WeightsSpec { file: WEIGHTS_FILE.into(), format: "safetensors".into(), dtype: dtype.into(), sha256: sha256.into() },
    };
    let text = card.to_toml().map_err(|reason| ImportError::InvalidDescription { reason })?;
    ModelCard::parse(&text).map_err(|reason| ImportError::InvalidDescription { reason })
}

/// Builds the model from the written bytes and runs it once on a blank image.
fn verify(card: &ModelCard, weights: Vec<u8>) -> Result<(), ImportError> {
    let s = card.input.size;
    let blank = GrayImage::new(s, s, vec![0.5; s * s]).map_err(ImportError::Verify)?;
    if card.architecture.is_segmentation() {
        let m = Segmenter::from_safetensors(card.clone(), weights, &Device::Cpu).map_err(ImportError::Verify)?;
        m.segment(&blank, &SegmentOptions::default()).map_err(ImportError::Verify)?;
    } else {
        let m = Model::from_safetensors(card.clone(), weights, &Device::Cpu).map_err(ImportError::Verify)?;
        m.logits(&[&blank]).map_err(ImportError::Verify)?;
    }
    Ok(())
}
