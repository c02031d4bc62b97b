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

use radsight_dicom::{DecodeLimits, DecodedImage, Letterbox, PixelBox};
use radsight_vision::card::{AppliesTo, LabelCode, ModelCard};
use radsight_vision::{AnalyzeOptions, Model, Registry, Saliency, SaliencyMethod, SegmentOptions, Segmenter};
use serde_json::{Value, json};

use crate::configuration::AnalysisSettings;
use crate::results::store::Artefact;
use crate::results::{Finding, ModelIdentity, RegionArea, StandardCode};

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

/// One routed model's outcome on an image: its id, and its analysis or why it failed.
pub type ModelOutcome = (String, Result<Analysed, AnalysisError>);

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
    /// `None` for segmentation (its explanation is the mask itself).
    pub deletion_auc: Option<f64>,
    pub random_deletion_auc: Option<f64>,
    pub runtime_ms: i64,
    pub artefacts: Vec<Artefact>,
    /// Header facts for the `dicom.decode` audit entry (no PHI).
    pub decoded: Value,
    pub body_part: Option<String>,
}

impl Analysed {
    /// Whether a segmentation model made it (its findings are regions with areas).
    pub fn is_segmentation(&self) -> bool {
        crate::results::store::are_regions(&self.findings)
    }

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
            deletion_auc: self.deletion_auc,
            random_deletion_auc: self.random_deletion_auc,
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
    segmenters: Mutex<HashMap<String, Arc<Segmenter>>>,
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
        Ok(Analyzer {
            registry,
            settings: settings.clone(),
            routes,
            loaded: Mutex::new(HashMap::new()),
            segmenters: Mutex::new(HashMap::new()),
        })
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

    /// The models for a study: every configured route that matches, in the order written (a
    /// model named twice runs once); without routes, every model whose card applies
    /// (classifiers and segmenters), in the registry's order.
    pub fn choose_all(&self, modality: Option<&str>, body_part: Option<&str>, procedure_code: Option<&str>) -> Vec<String> {
        let mut chosen: Vec<String> = Vec::new();
        let candidates: Vec<String> = if self.routes.is_empty() {
            self.registry.route(modality, body_part, procedure_code).into_iter().map(|e| e.card.id.clone()).collect()
        } else {
            self.routes.iter().filter(|(when, _)| when.matches(modality, body_part, procedure_code)).map(|(_, m)| m.clone()).collect()
        };
        for id in candidates {
            if !chosen.contains(&id) {
                chosen.push(id);
            }
        }
        chosen
    }

    /// The first of [`Analyzer::choose_all`].
    pub fn choose(&self, modality: Option<&str>, body_part: Option<&str>, procedure_code: Option<&str>) -> Option<String> {
        self.choose_all(modality, body_part, procedure_code).into_iter().next()
    }

    /// What a model's card says of it, for a result row when the model itself could not run.
    pub fn identity(&self, id: &str) -> Option<ModelIdentity> {
        Some(identity_of(&self.registry.get(id).ok()?.card))
    }

    /// Decodes one DICOM instance once and runs every model routed to it, each on the same
    /// pixels: one outcome per model, in routing order. Decoding errors and "no model applies"
    /// are the instance's; a refused or failing model is its own outcome. CPU-bound: call from
    /// a blocking thread.
    pub fn analyse_all(&self, bytes: &[u8], procedure_code: Option<&str>) -> Result<Vec<ModelOutcome>, AnalysisError> {
        let decoded = radsight_dicom::decode(bytes, &self.limits())?;
        let ids = self.choose_all(decoded.modality.as_deref(), decoded.body_part.as_deref(), procedure_code);
        if ids.is_empty() {
            return Err(no_model(&decoded));
        }
        let method = saliency_method(&self.settings.saliency).map_err(|e| AnalysisError::Inference(e.to_string()))?;
        Ok(ids
            .into_iter()
            .map(|id| {
                let outcome = self.run_model(&id, &decoded, &method);
                (id, outcome)
            })
            .collect())
    }

    /// Loads `id` once, checking its weights' hash against its card.
    pub fn model(&self, id: &str) -> Result<Arc<Model>, AnalysisError> {
        cached(&self.loaded, id, || self.registry.load(id))
    }

    /// Loads segmentation model `id` once, checking its weights' hash against its card.
    pub fn segmenter(&self, id: &str) -> Result<Arc<Segmenter>, AnalysisError> {
        cached(&self.segmenters, id, || self.registry.load_segmenter(id))
    }

    /// Runs model `id` on a decoded image: a classifier with the configured saliency method, a
    /// segmenter with its mask and the Grad-CAM of the mask score.
    fn run_model(&self, id: &str, decoded: &DecodedImage, method: &SaliencyMethod) -> Result<Analysed, AnalysisError> {
        let segments = self.registry.get(id).map(|e| e.card.architecture.is_segmentation()).unwrap_or(false);
        if segments { run_segmenter(self.segmenter(id)?.as_ref(), decoded) } else { run(self.model(id)?.as_ref(), decoded, method.clone()) }
    }

    /// Decodes one DICOM instance and runs the routed (or named) model on it. CPU-bound: call
    /// from a blocking thread.
    pub fn analyse(&self, bytes: &[u8], procedure_code: Option<&str>, model: Option<&str>) -> Result<Analysed, AnalysisError> {
        let decoded = radsight_dicom::decode(bytes, &self.limits())?;
        let id = match model {
            Some(m) => m.to_owned(),
            None => {
                self.choose(decoded.modality.as_deref(), decoded.body_part.as_deref(), procedure_code).ok_or_else(|| no_model(&decoded))?
            }
        };
        let method = saliency_method(&self.settings.saliency).map_err(|e| AnalysisError::Inference(e.to_string()))?;
        self.run_model(&id, &decoded, &method)
    }
}

/// `id` from `cache`, else loaded by `load` (a refusal names the model) and kept.
fn cached<T>(
    cache: &Mutex<HashMap<String, Arc<T>>>,
    id: &str,
    load: impl FnOnce() -> Result<T, radsight_vision::Error>,
) -> Result<Arc<T>, AnalysisError> {
    if let Some(m) = cache.lock().expect("model cache").get(id) {
        return Ok(m.clone());
    }
    let model = Arc::new(load().map_err(|e| AnalysisError::ModelRefused { model: id.to_owned(), reason: e.to_string() })?);
    cache.lock().expect("model cache").insert(id.to_owned(), model.clone());
    Ok(model)
}

/// No model applies to this image: its header facts go with the error, for the audit entry.
fn no_model(decoded: &DecodedImage) -> AnalysisError {
    AnalysisError::NoModel {
        modality: decoded.modality.clone(),
        body_part: decoded.body_part.clone(),
        decoded: Box::new(header_facts(decoded)),
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
pub fn card_summary(c: &ModelCard) -> Value {
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

/// The frame a model sees, and its letterbox to the model's input.
struct Prepared {
    frame: u32,
    source: radsight_dicom::GrayImage,
    input: radsight_vision::GrayImage,
    letterbox: Letterbox,
}

fn prepare(decoded: &DecodedImage, size: usize) -> Result<Prepared, AnalysisError> {
    let frame = decoded.default_frame();
    let source = decoded.normalised_frame(frame).ok_or_else(|| AnalysisError::Inference("the frame has no pixels".into()))?;
    let (input, letterbox) = radsight_dicom::letterbox(&source, size as u32);
    let input = radsight_vision::GrayImage::new(size, size, input.into_data()).map_err(|e| AnalysisError::Inference(e.to_string()))?;
    Ok(Prepared { frame, source, input, letterbox })
}

/// A saliency map placed on the source: the map on the pictures' display grid, the map on the
/// model grid, and its peak and box in source pixels.
struct Placed {
    display_map: radsight_dicom::GrayImage,
    model_map: radsight_dicom::GrayImage,
    peak: Value,
    bbox: Value,
}

fn place(s: &Saliency, p: &Prepared) -> Result<Placed, AnalysisError> {
    let model_map = radsight_dicom::GrayImage::new(s.width as u32, s.height as u32, s.map.clone())
        .ok_or_else(|| AnalysisError::Inference("saliency map of the wrong size".into()))?;
    // Straight to the display grid: the source-sized map was 16 MiB for a 2048² radiograph and
    // carried nothing the model grid does not.
    let k = render::display_factor(p.source.width(), p.source.height());
    let display_map = p.letterbox.map_to_display(&model_map, k).map_err(|e| AnalysisError::Inference(format!("{e:?}")))?;
    let (px, py) = p.letterbox.to_source_point(s.peak.x as f64 + 0.5, s.peak.y as f64 + 0.5);
    let bbox = source_box(&p.letterbox, &s.bbox, p.source.width(), p.source.height());
    Ok(Placed { display_map, model_map, peak: json!({"x": px.floor(), "y": py.floor()}), bbox })
}

/// A box on the model grid (inclusive corners) as a source-pixel box, clamped to the image.
fn source_box(letterbox: &Letterbox, b: &radsight_vision::BBox, w: u32, h: u32) -> Value {
    let b = letterbox.to_source_box(PixelBox { x0: b.x0 as f64, y0: b.y0 as f64, x1: b.x1 as f64 + 1.0, y1: b.y1 as f64 + 1.0 });
    let clamp = |v: f64, max: u32| v.clamp(0.0, max as f64);
    json!({
        "x": clamp(b.x0, w).floor(), "y": clamp(b.y0, h).floor(),
        "width": (clamp(b.x1, w) - clamp(b.x0, w)).round(), "height": (clamp(b.y1, h) - clamp(b.y0, h)).round(),
    })
}

/// The explanation fields every result shares: the map's peak and box, the frame, the window,
/// the letterbox geometry and the display grid of the stored pictures.
fn common_explanation(s: &Saliency, placed: &Placed, p: &Prepared, decoded: &DecodedImage) -> serde_json::Map<String, Value> {
    let (w, h) = (p.source.width(), p.source.height());
    let k = render::display_factor(w, h);
    let l = &p.letterbox;
    let value = json!({
        "method": method_name(&s.method),
        "params": s.method,
        "label": s.label,
        "target_layer": s.target_layer,
        "peak": placed.peak,
        "bbox": placed.bbox,
        "bbox_threshold": s.bbox_threshold,
        "raw_max": s.raw_max,
        "frame": p.frame,
        "window": {"center": decoded.window.center, "width": decoded.window.width, "source": format!("{:?}", decoded.window.source)},
        "letterbox": {"size": l.size, "scale": l.scale, "pad_x": l.pad_x, "pad_y": l.pad_y,
                      "source_width": l.source_width, "source_height": l.source_height},
        // The stored pictures: the source shrunk by `factor` (peak and bbox above are in source
        // pixels; divide by `factor` for the pictures). The raw map is on the letterbox grid.
        "display": {"factor": k, "width": w.div_ceil(k), "height": h.div_ceil(k)},
    });
    match value {
        Value::Object(m) => m,
        _ => unreachable!("a JSON object literal"),
    }
}

fn identity_of(card: &ModelCard) -> ModelIdentity {
    ModelIdentity { id: card.id.clone(), version: card.version.clone(), weights_sha256: card.weights.sha256.clone() }
}

fn standard_code(c: &LabelCode) -> StandardCode {
    StandardCode { system: c.system.clone(), code: c.code.clone(), display: c.display.clone() }
}

fn run(model: &Model, decoded: &DecodedImage, method: SaliencyMethod) -> Result<Analysed, AnalysisError> {
    let started = std::time::Instant::now();
    let p = prepare(decoded, model.input_size())?;
    let options = AnalyzeOptions { method: method.clone(), ..AnalyzeOptions::default() };
    let (analysis, picture) = render::alongside_picture(&p.source, || model.analyze(&p.input, &options));
    let analysis = analysis.map_err(|e| AnalysisError::Inference(e.to_string()))?;
    let s = &analysis.saliency;
    let placed = place(s, &p)?;

    let labels = &model.card().labels;
    let findings: Vec<Finding> = analysis
        .probabilities
        .iter()
        .map(|p| {
            let label = labels.iter().find(|l| l.name == p.label);
            Finding {
                display: label.map(|l| display_name(&l.name)).unwrap_or_else(|| p.label.clone()),
                code: p.label.clone(),
                probability: f64::from(p.probability),
                threshold: f64::from(p.threshold),
                standard: label.and_then(|l| l.code.as_ref()).map(standard_code),
                area: None,
            }
        })
        .collect();

    let artefacts = render::artefacts(picture.map_err(AnalysisError::Render)?, &placed.display_map, &placed.model_map)
        .map_err(AnalysisError::Render)?;
    let mut explanation = common_explanation(s, &placed, &p, decoded);
    explanation.insert("kind".into(), json!("classification"));
    explanation.insert(
        "faithfulness".into(),
        json!({"steps": analysis.faithfulness.steps, "baseline": analysis.faithfulness.baseline, "random_seed": analysis.faithfulness.random_seed,
               "curve": analysis.faithfulness.curve, "random_curve": analysis.faithfulness.random_curve}),
    );
    // ROAD, the faithfulness measure fixed in advance (`results::faithfulness` reads it).
    explanation.insert("road".into(), json!(analysis.road));
    let deletion = (f64::from(analysis.faithfulness.deletion_auc), f64::from(analysis.faithfulness.random_deletion_auc));
    Ok(analysed(model.card(), decoded, findings, method_name(&s.method), explanation, Some(deletion), artefacts, started))
}

/// The analysis of `decoded` by the model of `card`, with what every result records: the
/// model's identity and card, the instance and its pixel hash, the run time.
#[allow(clippy::too_many_arguments)]
fn analysed(
    card: &ModelCard,
    decoded: &DecodedImage,
    findings: Vec<Finding>,
    saliency_method: &str,
    explanation: serde_json::Map<String, Value>,
    deletion: Option<(f64, f64)>,
    artefacts: Vec<Artefact>,
    started: std::time::Instant,
) -> Analysed {
    Analysed {
        model: identity_of(card),
        model_card: card_summary(card),
        findings,
        sop_instance_uid: decoded.sop_instance_uid.clone(),
        sop_class_uid: decoded.sop_class_uid.clone(),
        series_uid: decoded.series_instance_uid.clone(),
        input_sha256: decoded.pixel_sha256_hex(),
        saliency_method: saliency_method.into(),
        explanation: Value::Object(explanation),
        deletion_auc: deletion.map(|d| d.0),
        random_deletion_auc: deletion.map(|d| d.1),
        runtime_ms: started.elapsed().as_millis() as i64,
        artefacts,
        decoded: header_facts(decoded),
        body_part: decoded.body_part.clone(),
    }
}

/// A segmentation: one finding per label with its area (mm² from the image's pixel spacing),
/// the class map as a picture on the display grid, and the Grad-CAM of the mask score.
fn run_segmenter(model: &Segmenter, decoded: &DecodedImage) -> Result<Analysed, AnalysisError> {
    let started = std::time::Instant::now();
    let p = prepare(decoded, model.input_size())?;
    let (seg, picture) = render::alongside_picture(&p.source, || model.segment(&p.input, &SegmentOptions::default()));
    let seg = seg.map_err(|e| AnalysisError::Inference(e.to_string()))?;
    let placed = place(&seg.saliency, &p)?;

    // One model pixel covers 1/f source pixels per axis (f = scaled side / source side).
    let l = &p.letterbox;
    let (fx, fy) = (f64::from(l.scaled_width) / f64::from(l.source_width), f64::from(l.scaled_height) / f64::from(l.source_height));
    let spacing = decoded.pixel_spacing;
    let card = model.card();
    let findings: Vec<Finding> = seg
        .regions
        .iter()
        .map(|r| Finding {
            display: display_name(&r.label),
            code: r.label.clone(),
            probability: if r.area_px > 0 { 1.0 } else { 0.0 },
            threshold: 0.5,
            standard: r.code.as_ref().map(standard_code),
            area: Some(RegionArea {
                model_pixels: r.area_px as u64,
                mm2: spacing.map(|s| radsight_vision::segment::area_mm2(r.area_px, s.row_mm / fy, s.column_mm / fx)),
                spacing_source: spacing.map(|s| s.source.as_str().to_owned()),
            }),
        })
        .collect();

    let mut artefacts = render::artefacts(picture.map_err(AnalysisError::Render)?, &placed.display_map, &placed.model_map)
        .map_err(AnalysisError::Render)?;
    artefacts.push(
        render::class_map_png(&seg.class_map, seg.width, &p.letterbox, p.source.width(), p.source.height())
            .map_err(AnalysisError::Render)?,
    );
    let mut explanation = common_explanation(&seg.saliency, &placed, &p, decoded);
    explanation.insert("kind".into(), json!("segmentation"));
    explanation.insert(
        "regions".into(),
        json!(
            seg.regions
                .iter()
                .map(|r| json!({
                    "label": r.label, "channel": r.channel, "model_pixels": r.area_px,
                    "bbox": r.bbox.as_ref().map(|b| source_box(&p.letterbox, b, p.source.width(), p.source.height())),
                }))
                .collect::<Vec<_>>()
        ),
    );
    explanation.insert(
        "pixel_spacing".into(),
        json!(spacing.map(|s| json!({"row_mm": s.row_mm, "column_mm": s.column_mm, "source": s.source.as_str()}))),
    );
    Ok(analysed(card, decoded, findings, "grad-cam", explanation, None, artefacts, started))
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
    use crate::results::faithfulness::FaithfulnessOfResult;

    #[test]
    fn the_road_the_vision_crate_writes_is_what_the_results_read_back() {
        let road = radsight_vision::Road {
            percentiles: vec![10.0, 90.0],
            morf: vec![-0.1, -0.3],
            lerf: vec![0.0, -0.02],
            morf_mean: -0.2,
            lerf_mean: -0.01,
            combined: 0.095,
            noise: 0.01,
            seed: 0,
        };
        let random = radsight_vision::Road { combined: 0.01, ..road.clone() };
        let written = radsight_vision::RoadFaithfulness { map: road, random, beats_random: true };
        let explanation = json!({"road": written}).to_string();
        let read = FaithfulnessOfResult::from_parts(None, None, Some(&explanation)).road.expect("read back");
        assert_eq!((read.map.combined, read.random.combined, read.beats_random), (0.095, 0.01, true));
        assert_eq!(read.map.percentiles, vec![10.0, 90.0]);
    }

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

    #[test]
    fn every_matching_route_runs_its_model_once_in_the_order_written() {
        let route = |modalities: &[&str], model: &str| ModelRoute {
            modalities: modalities.iter().map(|m| m.to_string()).collect(),
            body_parts: vec![],
            procedure_codes: vec![],
            model: model.into(),
        };
        let routed =
            analyzer(vec![route(&["DX"], "second-model"), route(&[], "radsight-phantom-cxr"), route(&["DX", "CR"], "second-model")]);
        assert_eq!(routed.choose_all(Some("DX"), None, None), vec!["second-model", "radsight-phantom-cxr"]);
        assert_eq!(routed.choose_all(Some("CT"), None, None), vec!["radsight-phantom-cxr"]);
        assert_eq!(routed.identity("radsight-phantom-cxr").map(|m| m.id), Some("radsight-phantom-cxr".into()));
        assert_eq!(routed.identity("second-model"), None, "not in the registry");
    }
}
