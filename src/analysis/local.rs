//! `radsight analyze <file-or-folder>`: the same pipeline as a study from the PACS, on local
//! DICOM files. It prints the findings, writes each file's pictures and a JSON report, and
//! audits the run (one `analyze.run` entry naming inputs by their pixel SHA-256, never by path
//! or patient).
//!
//! [`run`] returns a typed [`LocalReport`]; `report.json` is written from the same values, so
//! the printed findings, the file and the audit summary cannot drift apart.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use super::{Analysed, AnalysisError, Analyzer};
use crate::results::overlay;
use crate::results::store::ArtefactKind;
use crate::results::{Finding, ModelIdentity};

/// The notice printed after the findings and kept in `report.json`.
pub const NOTICE: &str = "AI findings support and do not replace the clinician's judgement.";

/// What `report.json` holds: the run's provenance and one item per input file.
#[derive(Debug, Serialize)]
pub struct LocalReport {
    pub generator: String,
    /// RFC 3339 instant of the run.
    pub created: String,
    pub notice: &'static str,
    pub results: Vec<LocalItem>,
}

impl LocalReport {
    /// How many inputs were analysed.
    pub fn analysed(&self) -> usize {
        self.results.iter().filter(|i| matches!(i, LocalItem::Done(_))).count()
    }

    /// How many inputs failed.
    pub fn failed(&self) -> usize {
        self.results.len() - self.analysed()
    }
}

/// One input file's outcome; `status` is `done` or `failed` in the JSON.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum LocalItem {
    Done(Box<DoneItem>),
    Failed(FailedItem),
}

/// An analysed file: the model that ran, its findings, the saliency and its faithfulness.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DoneItem {
    pub file: String,
    pub model: ModelIdentity,
    pub pixel_sha256: String,
    pub findings: Vec<Finding>,
    pub saliency: Saliency,
    pub faithfulness: Faithfulness,
    pub runtime_ms: i64,
    /// Header facts of the decoded image (no PHI).
    pub image: Value,
    /// The pictures written next to `report.json`, by file name.
    pub outputs: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Saliency {
    /// `grad-cam`, `integrated-gradients` or `occlusion`.
    pub method: String,
    pub explanation: Value,
}

/// The deletion check of the saliency map, against a random map.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Faithfulness {
    /// `None` for a segmentation (its explanation is the mask itself).
    pub deletion_auc: Option<f64>,
    pub random_deletion_auc: Option<f64>,
}

/// A file the pipeline could not analyse.
#[derive(Debug, Serialize)]
pub struct FailedItem {
    pub file: String,
    /// The stable code of the [`AnalysisError`].
    pub reason: &'static str,
    /// The error as a sentence.
    pub error: String,
}

/// Why a run stopped before it covered every input.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// An analysis error that stops the whole run (a model refused against its card): later
    /// files would meet the same model.
    #[error(transparent)]
    Stopped(AnalysisError),
    /// Reading an input or writing an output failed (the message names the file).
    #[error(transparent)]
    Files(#[from] anyhow::Error),
}

impl LocalError {
    /// The `reason` of the run's `analyze.run` audit entry.
    pub fn audit_reason(&self) -> &'static str {
        match self {
            LocalError::Stopped(AnalysisError::ModelRefused { .. }) => "model-refused",
            LocalError::Stopped(_) | LocalError::Files(_) => "error",
        }
    }
}

/// One result in the `analyze.run` audit entry: no file name, the input only by pixel hash.
#[derive(Debug, Serialize)]
pub struct AuditedItem<'a> {
    pub status: &'static str,
    pub pixel_sha256: Option<&'a str>,
    pub model: Option<&'a ModelIdentity>,
    pub reason: Option<&'static str>,
    pub findings: Option<Vec<AuditedFinding<'a>>>,
}

#[derive(Debug, Serialize)]
pub struct AuditedFinding<'a> {
    pub code: &'a str,
    pub probability: f64,
}

impl LocalItem {
    /// What the audit trail keeps of this item.
    pub fn audited(&self) -> AuditedItem<'_> {
        match self {
            LocalItem::Done(d) => AuditedItem {
                status: "done",
                pixel_sha256: Some(&d.pixel_sha256),
                model: Some(&d.model),
                reason: None,
                findings: Some(d.findings.iter().map(|f| AuditedFinding { code: &f.code, probability: f.probability }).collect()),
            },
            LocalItem::Failed(f) => {
                AuditedItem { status: "failed", pixel_sha256: None, model: None, reason: Some(f.reason), findings: None }
            }
        }
    }
}

/// Whether a file is DICOM Part 10 (the `DICM` marker after the preamble) or named `.dcm`.
fn looks_like_dicom(path: &Path) -> bool {
    use std::io::Read;
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("dcm")) {
        return true;
    }
    let mut head = [0u8; 132];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head[128..] == b"DICM"
}

/// The DICOM files under `input`, sorted so runs are repeatable; a file named directly is
/// always taken. Other files in a folder (reports, DICOMDIR indexes) are left out.
pub fn collect_inputs(input: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(input).with_context(|| format!("reading {}", input.display()))?;
    if meta.is_file() {
        return Ok(vec![input.to_owned()]);
    }
    let mut files = Vec::new();
    let mut pending = vec![input.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() && looks_like_dicom(&entry.path()) && entry.file_name() != "DICOMDIR" {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A one-line progress bar on stderr, redrawn in place when stderr is a terminal.
fn progress(done: usize, total: usize, name: &str) {
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    let line = format!("[{}{}] {done}/{total} {name}", "#".repeat(filled), "-".repeat(width - filled));
    let mut err = std::io::stderr();
    if std::io::IsTerminal::is_terminal(&err) {
        let _ = write!(err, "\r\x1b[2K{line}");
        if done == total {
            let _ = writeln!(err);
        }
    } else {
        let _ = writeln!(err, "{line}");
    }
}

/// Analyses every input in order, writing its pictures and finally `report.json` to `out_dir`.
/// A file that fails is reported and the run goes on, except on a model refusal.
pub fn run(analyzer: &Analyzer, inputs: &[PathBuf], out_dir: &Path, model: Option<&str>) -> Result<LocalReport, LocalError> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut results = Vec::new();
    for (i, path) in inputs.iter().enumerate() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        progress(i, inputs.len(), &name);
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let stem = format!("{:04}-{}", i + 1, name.trim_end_matches(".dcm"));
        let file = path.display().to_string();
        match analyzer.analyse(&bytes, None, model) {
            Ok(a) => {
                let outputs = write_artefacts(&a, out_dir, &stem)?;
                results.push(LocalItem::Done(Box::new(DoneItem {
                    file,
                    model: a.model,
                    pixel_sha256: a.input_sha256,
                    findings: a.findings,
                    saliency: Saliency { method: a.saliency_method, explanation: a.explanation },
                    faithfulness: Faithfulness { deletion_auc: a.deletion_auc, random_deletion_auc: a.random_deletion_auc },
                    runtime_ms: a.runtime_ms,
                    image: a.decoded,
                    outputs,
                })));
            }
            Err(e) => {
                results.push(LocalItem::Failed(FailedItem { file, reason: e.code(), error: e.to_string() }));
                if matches!(e, AnalysisError::ModelRefused { .. }) {
                    progress(i + 1, inputs.len(), &name);
                    return Err(LocalError::Stopped(e));
                }
            }
        }
        progress(i + 1, inputs.len(), &name);
    }
    let report = LocalReport {
        generator: format!("radsight {}", env!("CARGO_PKG_VERSION")),
        created: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .context("formatting the run's time")?,
        notice: NOTICE,
        results,
    };
    // Through a `Value` so the keys come out sorted, as report.json has always had them.
    let json = serde_json::to_value(&report).and_then(|v| serde_json::to_string_pretty(&v)).context("serialising report.json")?;
    std::fs::write(out_dir.join("report.json"), json).context("writing report.json")?;
    Ok(report)
}

/// Writes one analysis' pictures and maps as `<stem>.<kind>`, with the blended overlay the
/// service renders on first read (`<stem>.saliency.png`); their file names, in order.
fn write_artefacts(a: &Analysed, out_dir: &Path, stem: &str) -> anyhow::Result<Vec<String>> {
    let picture = |kind| a.artefacts.iter().find(|x| x.kind == kind).map(|x| x.bytes.as_slice());
    let overlay = match (picture(ArtefactKind::ImagePng), picture(ArtefactKind::HeatmapPng)) {
        (Some(image), Some(heatmap)) => Some(overlay::blend(image, heatmap).context("blending the saliency overlay")?.png),
        _ => None,
    };
    let mut files: Vec<(String, &[u8])> = Vec::new();
    for artefact in &a.artefacts {
        let file = match artefact.kind {
            ArtefactKind::ImagePng => format!("{stem}.image.png"),
            ArtefactKind::SaliencyPng => format!("{stem}.saliency.png"),
            ArtefactKind::HeatmapPng => format!("{stem}.heatmap.png"),
            ArtefactKind::SaliencyMap => format!("{stem}.saliency.f32"),
            ArtefactKind::MaskPng => format!("{stem}.mask.png"),
        };
        files.push((file, &artefact.bytes));
        if let (ArtefactKind::ImagePng, Some(overlay)) = (artefact.kind, &overlay) {
            files.push((format!("{stem}.saliency.png"), overlay));
        }
    }
    let mut written = Vec::new();
    for (file, bytes) in files {
        std::fs::write(out_dir.join(&file), bytes).with_context(|| format!("writing {file}"))?;
        written.push(file);
    }
    Ok(written)
}
