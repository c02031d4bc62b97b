//! The analysis pipeline: DICOM Part 10 bytes → decoded, windowed pixels (`radsight-dicom`) →
//! letterboxed model input → a versioned candle model with its saliency map and faithfulness
//! (`radsight-vision`) → findings, explanation and pictures in source pixel coordinates, ready
//! to store with their audit entry ([`crate::results::store`]).
//!
//! The job worker and `radsight analyze` both run [`Analyzer::analyse`], so a local run and a
//! study from the PACS go through exactly the same steps.
//!
//! **Invariant:** a model is used only after its weights matched the SHA-256 in its card; a
//! refusal is returned as [`AnalysisError::ModelRefused`] for the caller to audit.

pub mod local;
pub mod phantom_dicom;
pub mod render;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use radsight_dicom::{DecodeLimits, DecodedImage, PixelBox};
use radsight_vision::card::AppliesTo;
use radsight_vision::{AnalyzeOptions, Model, Registry, SaliencyMethod};
use serde_json::{Value, json};

use crate::configuration::AnalysisSettings;
use crate::results::store::Artefact;
use crate::results::{Finding, ModelIdentity};

#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error("the image could not be decoded: {0}")]
    Decode(#[from] radsight_dicom::DecodeError),
    #[error("no model applies to modality {modality:?}, body part {body_part:?}")]
    NoModel { modality: Option<String>, body_part: Option<String>, decoded: Box<Value> },
    #[error("model {model} was refused: {reason}")]
    ModelRefused { model: String, reason: String },
    #[error("the model failed: {0}")]
    Inference(String),
    #[error("the result pictures could not be made: {0}")]
    Render(String),
}

impl AnalysisError {
    /// A stable code for the job row and the audit trail.
    pub fn code(&self) -> &'static str {
        match self {
            AnalysisError::Decode(e) => e.code(),
            AnalysisError::NoModel { .. } => "no-model-applies",
            AnalysisError::ModelRefused { .. } => "model-refused",
            AnalysisError::Inference(_) => "inference-failed",
            AnalysisError::Render(_) => "render-failed",
        }
    }

    /// Whether retrying the same input cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            AnalysisError::Decode(e) => e.is_permanent(),
            _ => true,
        }
    }
}

/// What an analysis of one image gives: everything a stored result needs but its ids.
pub struct Analysed {
    pub model: ModelIdentity,
    pub model_card: Value,
    pub findings: Vec<Finding>,
    pub sop_instance_uid: Option<String>,
    pub sop_class_uid: Option<String>,
    pub series_uid: Option<String>,
    pub input_sha256: String,
    pub saliency_method: String,
    pub explanation: Value,
    pub deletion_auc: f64,
    pub random_deletion_auc: f64,
    pub runtime_ms: i64,
    pub artefacts: Vec<Artefact>,
    /// Header facts for the `dicom.decode` audit entry (no PHI).
    pub decoded: Value,
    pub body_part: Option<String>,
}

impl Analysed {
    /// The result to store for `study_uid`.
    pub fn into_result(self, id: String, study_uid: String, job_id: Option<String>) -> crate::results::store::NewResult {
        crate::results::store::NewResult {
            id,
            study_uid,
            job_id,
            model: self.model,
            model_card: self.model_card,
            findings: self.findings,
            sop_instance_uid: self.sop_instance_uid,
            sop_class_uid: self.sop_class_uid,
            series_uid: self.series_uid,
            input_sha256: self.input_sha256,
            saliency_method: self.saliency_method,
            explanation: self.explanation,
            deletion_auc: Some(self.deletion_auc),
            random_deletion_auc: Some(self.random_deletion_auc),
            runtime_ms: self.runtime_ms,
            artefacts: self.artefacts,
            body_part: self.body_part,
        }
    }
}

/// The model registry and the models loaded from it (each once, after its hash matched).
pub struct Analyzer {
    registry: Registry,
    settings: AnalysisSettings,
    /// `[[analysis.routes]]` in the cards' own matching terms, first match wins.
    routes: Vec<(AppliesTo, String)>,
    loaded: Mutex<HashMap<String, Arc<Model>>>,
}

impl Analyzer {
    pub fn open(settings: &AnalysisSettings) -> anyhow::Result<Analyzer> {
        let registry = Registry::open(&settings.models_dir).map_err(|e| {
            anyhow::anyhow!("opening the model registry {} (set [analysis] models_dir): {e}", settings.models_dir.display())
        })?;
        saliency_method(&settings.saliency)?;
        let routes = settings
            .routes
            .iter()
            .map(|r| {
                let when = AppliesTo {
                    modalities: r.modalities.clone(),
                    body_parts: r.body_parts.clone(),
                    procedure_codes: r.procedure_codes.clone(),
                };
                (when, r.model.clone())
            })
            .collect();
        Ok(Analyzer { registry, settings: settings.clone(), routes, loaded: Mutex::new(HashMap::new()) })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_rows: self.settings.max_rows,
            max_columns: self.settings.max_columns,
            max_frames: self.settings.max_frames,
            max_pixel_bytes: self.settings.max_pixel_bytes,
        }
    }

    /// The model for a study: the first configured route that matches, else the first model
    /// whose card applies.
    pub fn choose(&self, modality: Option<&str>, body_part: Option<&str>, procedure_code: Option<&str>) -> Option<String> {
        if !self.routes.is_empty() {
            return self.routes.iter().find(|(when, _)| when.matches(modality, body_part, procedure_code)).map(|(_, model)| model.clone());
        }
        self.registry.route(modality, body_part, procedure_code).first().map(|e| e.card.id.clone())
    }

    /// Loads `id` once, checking its weights' hash against its card.
    pub fn model(&self, id: &str) -> Result<Arc<Model>, AnalysisError> {
        if let Some(m) = self.loaded.lock().expect("model cache").get(id) {
            return Ok(m.clone());
        }
        let model = self.registry.load(id).map_err(|e| AnalysisError::ModelRefused { model: id.to_owned(), reason: e.to_string() })?;
        let model = Arc::new(model);
        self.loaded.lock().expect("model cache").insert(id.to_owned(), model.clone());
        Ok(model)
    }

    /// Decodes one DICOM instance and runs the routed (or named) model on it. CPU-bound: call
    /// from a blocking thread.
    pub fn analyse(&self, bytes: &[u8], procedure_code: Option<&str>, model: Option<&str>) -> Result<Analysed, AnalysisError> {
        let decoded = radsight_dicom::decode(bytes, &self.limits())?;
        let id = match model {
            Some(m) => m.to_owned(),
            None => self.choose(decoded.modality.as_deref(), decoded.body_part.as_deref(), procedure_code).ok_or_else(|| {
                AnalysisError::NoModel {
                    modality: decoded.modality.clone(),
                    body_part: decoded.body_part.clone(),
                    decoded: Box::new(header_facts(&decoded)),
                }
            })?,
        };
        let model = self.model(&id)?;
        let method = saliency_method(&self.settings.saliency).map_err(|e| AnalysisError::Inference(e.to_string()))?;
        run(&model, &decoded, method)
    }
}

/// The configured method name as the vision crate's method with the parameters we record.
pub fn saliency_method(name: &str) -> anyhow::Result<SaliencyMethod> {
    Ok(match name {
        "grad-cam" => SaliencyMethod::GradCam,
        "integrated-gradients" => SaliencyMethod::IntegratedGradients { steps: 32, baseline: 0.0 },
        "occlusion" => SaliencyMethod::Occlusion { patch: 16, stride: 8, fill_blur_radius: 6 },
        other => anyhow::bail!("unknown saliency method {other:?}: use grad-cam, integrated-gradients or occlusion"),
    })
}

fn method_name(m: &SaliencyMethod) -> &'static str {
    match m {
        SaliencyMethod::GradCam => "grad-cam",
        SaliencyMethod::IntegratedGradients { .. } => "integrated-gradients",
        SaliencyMethod::Occlusion { .. } => "occlusion",
    }
}

/// The card summary kept with every result, so the result shows the card of the exact version.
pub fn card_summary(model: &Model) -> Value {
    let c = model.card();
    // Flat "label measure" → value pairs, for people reading the card in the app.
    let mut metrics = serde_json::Map::new();
    metrics.insert("validation set".into(), json!(format!("{} (n={})", c.validation.dataset, c.validation.n)));
    for m in &c.validation.labels {
        metrics.insert(format!("{} AUROC", m.label), json!(round3(m.auroc)));
        metrics.insert(format!("{} sensitivity at {:.2}", m.label, m.threshold), json!(round3(m.sensitivity)));
        metrics.insert(format!("{} specificity at {:.2}", m.label, m.threshold), json!(round3(m.specificity)));
        metrics.insert(format!("{} calibration error (ECE)", m.label), json!(round3(m.ece)));
    }
    json!({
        "metrics": metrics,
        "id": c.id,
        "version": c.version,
        "name": c.name,
        "summary": c.summary,
        "status": c.status,
        "intended_use": c.intended_use.purpose,
        "users": c.intended_use.users,
        "not_for_clinical_use": c.intended_use.not_for_clinical_use,
        "limitations": c.intended_use.limitations,
        "training_data": c.training.data,
        "labels": c.labels.iter().map(|l| json!({"name": l.name, "description": l.description, "threshold": l.threshold})).collect::<Vec<_>>(),
        "validation": c.validation,
        "saliency": c.saliency,
    })
}

fn run(model: &Model, decoded: &DecodedImage, method: SaliencyMethod) -> Result<Analysed, AnalysisError> {
    let started = std::time::Instant::now();
    let frame = decoded.default_frame();
    let source = decoded.normalised_frame(frame).ok_or_else(|| AnalysisError::Inference("the frame has no pixels".into()))?;
    let size = model.input_size() as u32;
    let (input, letterbox) = radsight_dicom::letterbox(&source, size);
    let input = radsight_vision::GrayImage::new(size as usize, size as usize, input.into_data())
        .map_err(|e| AnalysisError::Inference(e.to_string()))?;
    let options = AnalyzeOptions { method: method.clone(), ..AnalyzeOptions::default() };
    let analysis = model.analyze(&input, &options).map_err(|e| AnalysisError::Inference(e.to_string()))?;

    // The map back onto the source grid, and its peak and box in source pixels.
    let s = &analysis.saliency;
    let map = radsight_dicom::GrayImage::new(s.width as u32, s.height as u32, s.map.clone())
        .ok_or_else(|| AnalysisError::Inference("saliency map of the wrong size".into()))?;
    let source_map = letterbox.map_to_source(&map).map_err(|e| AnalysisError::Inference(format!("{e:?}")))?;
    let (px, py) = letterbox.to_source_point(s.peak.x as f64 + 0.5, s.peak.y as f64 + 0.5);
    let b = letterbox.to_source_box(PixelBox {
        x0: s.bbox.x0 as f64,
        y0: s.bbox.y0 as f64,
        x1: s.bbox.x1 as f64 + 1.0,
        y1: s.bbox.y1 as f64 + 1.0,
    });
    let clamp = |v: f64, max: u32| v.clamp(0.0, max as f64);
    let (w, h) = (source.width(), source.height());
    let bbox = json!({
        "x": clamp(b.x0, w).floor(), "y": clamp(b.y0, h).floor(),
        "width": (clamp(b.x1, w) - clamp(b.x0, w)).round(), "height": (clamp(b.y1, h) - clamp(b.y0, h)).round(),
    });

    let labels = &model.card().labels;
    let findings: Vec<Finding> = analysis
        .probabilities
        .iter()
        .map(|p| Finding {
            display: labels.iter().find(|l| l.name == p.label).map(|l| display_name(&l.name)).unwrap_or_else(|| p.label.clone()),
            code: p.label.clone(),
            probability: f64::from(p.probability),
            threshold: f64::from(p.threshold),
        })
        .collect();

    let artefacts = render::artefacts(&source, &source_map, &map).map_err(AnalysisError::Render)?;
    let k = render::display_factor(w, h);
    let explanation = json!({
        "method": method_name(&s.method),
        "params": s.method,
        "label": s.label,
        "target_layer": s.target_layer,
        "peak": {"x": px.floor(), "y": py.floor()},
        "bbox": bbox,
        "bbox_threshold": s.bbox_threshold,
        "raw_max": s.raw_max,
        "faithfulness": {"steps": analysis.faithfulness.steps, "baseline": analysis.faithfulness.baseline, "random_seed": analysis.faithfulness.random_seed,
                          "curve": analysis.faithfulness.curve, "random_curve": analysis.faithfulness.random_curve},
        "frame": frame,
        "window": {"center": decoded.window.center, "width": decoded.window.width, "source": format!("{:?}", decoded.window.source)},
        "letterbox": {"size": letterbox.size, "scale": letterbox.scale, "pad_x": letterbox.pad_x, "pad_y": letterbox.pad_y,
                      "source_width": letterbox.source_width, "source_height": letterbox.source_height},
        // The stored pictures: the source shrunk by `factor` (peak and bbox above are in source
        // pixels; divide by `factor` for the pictures). The raw map is on the letterbox grid.
        "display": {"factor": k, "width": w.div_ceil(k), "height": h.div_ceil(k)},
    });
    let card = model.card();
    Ok(Analysed {
        model: ModelIdentity { id: card.id.clone(), version: card.version.clone(), weights_sha256: card.weights.sha256.clone() },
        model_card: card_summary(model),
        findings,
        sop_instance_uid: decoded.sop_instance_uid.clone(),
        sop_class_uid: decoded.sop_class_uid.clone(),
        series_uid: decoded.series_instance_uid.clone(),
        input_sha256: decoded.pixel_sha256_hex(),
        saliency_method: method_name(&s.method).into(),
        explanation,
        deletion_auc: f64::from(analysis.faithfulness.deletion_auc),
        random_deletion_auc: f64::from(analysis.faithfulness.random_deletion_auc),
        runtime_ms: started.elapsed().as_millis() as i64,
        artefacts,
        decoded: header_facts(decoded),
        body_part: decoded.body_part.clone(),
    })
}

/// What the `dicom.decode` audit entry records of an image: format facts, no PHI.
fn header_facts(decoded: &DecodedImage) -> Value {
    json!({
        "transfer_syntax": decoded.transfer_syntax, "photometric": decoded.photometric,
        "rows": decoded.rows, "columns": decoded.columns, "frames": decoded.frames,
        "bits_stored": decoded.bits_stored, "signed": decoded.signed, "modality": decoded.modality,
        "body_part": decoded.body_part,
        "window_source": format!("{:?}", decoded.window.source), "pixel_sha256": decoded.pixel_sha256_hex(),
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `pleural-effusion` → `Pleural effusion`.
fn display_name(label: &str) -> String {
    let spaced = label.replace(['-', '_'], " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => spaced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::{ModelRoute, Settings};

    fn analyzer(routes: Vec<ModelRoute>) -> Analyzer {
        let mut settings = Settings::default().analysis;
        settings.models_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models").into();
        settings.routes = routes;
        Analyzer::open(&settings).unwrap()
    }

    #[test]
    fn configured_routes_win_over_the_cards_and_match_like_them() {
        let cards = analyzer(Vec::new());
        assert_eq!(cards.choose(Some("DX"), Some("CHEST"), None).as_deref(), Some("radsight-phantom-cxr"));
        assert_eq!(cards.choose(Some("CT"), Some("HEAD"), None), None);

        let route =
            ModelRoute { modalities: vec!["CT".into()], body_parts: vec![], procedure_codes: vec![], model: "radsight-phantom-cxr".into() };
        let routed = analyzer(vec![route]);
        assert_eq!(
            routed.choose(Some("ct"), Some("HEAD"), None).as_deref(),
            Some("radsight-phantom-cxr"),
            "case-insensitive, empty lists match"
        );
        assert_eq!(routed.choose(Some("DX"), Some("CHEST"), None), None, "with routes, the cards' own applies_to is not consulted");
    }
}
