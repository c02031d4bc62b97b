//! `radsight analyze <file-or-folder>`: the same pipeline as a study from the PACS, on local
//! DICOM files. It prints the findings, writes each file's pictures and a JSON report, and
//! audits the run (one `analyze.run` entry naming inputs by their pixel SHA-256, never by path
//! or patient).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};

use super::{AnalysisError, Analyzer};
use crate::results::store::ArtefactKind;

pub struct LocalRun {
    pub analysed: usize,
    pub failed: usize,
    pub report: Value,
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
    let filled = if total == 0 { width } else { done * width / total };
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

pub fn run(analyzer: &Analyzer, inputs: &[PathBuf], out_dir: &Path, model: Option<&str>) -> anyhow::Result<LocalRun> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let (mut analysed, mut failed) = (0, 0);
    let mut items = Vec::new();
    for (i, path) in inputs.iter().enumerate() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        progress(i, inputs.len(), &name);
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let stem = format!("{:04}-{}", i + 1, name.trim_end_matches(".dcm"));
        match analyzer.analyse(&bytes, None, model) {
            Ok(a) => {
                analysed += 1;
                let mut written = Vec::new();
                for artefact in &a.artefacts {
                    let file = match artefact.kind {
                        ArtefactKind::ImagePng => format!("{stem}.image.png"),
                        ArtefactKind::SaliencyPng => format!("{stem}.saliency.png"),
                        ArtefactKind::HeatmapPng => format!("{stem}.heatmap.png"),
                        ArtefactKind::SaliencyMap => format!("{stem}.saliency.f32"),
                    };
                    std::fs::write(out_dir.join(&file), &artefact.bytes).with_context(|| format!("writing {file}"))?;
                    written.push(file);
                }
                items.push(json!({
                    "file": path.display().to_string(),
                    "status": "done",
                    "model": a.model,
                    "pixelSha256": a.input_sha256,
                    "findings": a.findings,
                    "saliency": {"method": a.saliency_method, "explanation": a.explanation},
                    "faithfulness": {"deletionAuc": a.deletion_auc, "randomDeletionAuc": a.random_deletion_auc},
                    "runtimeMs": a.runtime_ms,
                    "image": a.decoded,
                    "outputs": written,
                }));
            }
            Err(e) => {
                failed += 1;
                items.push(json!({"file": path.display().to_string(), "status": "failed", "reason": e.code(), "error": e.to_string()}));
                if matches!(e, AnalysisError::ModelRefused { .. }) {
                    progress(i + 1, inputs.len(), &name);
                    anyhow::bail!("{e}");
                }
            }
        }
        progress(i + 1, inputs.len(), &name);
    }
    let report = json!({
        "generator": format!("radsight {}", env!("CARGO_PKG_VERSION")),
        "created": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?,
        "notice": "AI findings support and do not replace the clinician's judgement.",
        "results": items,
    });
    std::fs::write(out_dir.join("report.json"), serde_json::to_string_pretty(&report)?).context("writing report.json")?;
    Ok(LocalRun { analysed, failed, report })
}
