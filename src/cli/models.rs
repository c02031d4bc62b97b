//! `radsight models`: list the model registry, verify weights against their cards, import a
//! model trained elsewhere (PyTorch weights as safetensors plus a description, made by
//! `scripts/export_torch.py`), train the shipped demonstration model, and write synthetic
//! phantom radiographs as DICOM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use radsight_vision::Registry;

use crate::analysis::phantom_dicom::{PhantomInstance, phantom_part10};
use crate::configuration::Settings;

#[derive(Subcommand)]
pub(super) enum ModelsCommand {
    /// The models in the registry, with their cards' key facts.
    List,
    /// Recompute every model's weights SHA-256 and compare it with its card; exit 1 on a mismatch.
    Verify,
    /// Import a PyTorch model: its state dict as safetensors and a description (TOML or JSON:
    /// architecture, input, preprocessing, labels with codes, thresholds, calibration), as
    /// `scripts/export_torch.py` writes them. Writes the registry entry (card, weights, SHA-256);
    /// a tensor that does not fit the architecture is refused by name.
    Import {
        /// The state dict, as safetensors.
        weights: PathBuf,
        /// The description (model.toml or model.json).
        description: PathBuf,
    },
    /// Train the shipped demonstration model on synthetic phantoms and write it to the registry.
    Train {
        /// The model folder to write (card, weights, hash).
        #[arg(long, default_value = "models/radsight-phantom-cxr")]
        out: PathBuf,
        #[arg(long, default_value_t = 20261129)]
        seed: u64,
        /// Optimisation steps; the default is the shipped model's.
        #[arg(long)]
        steps: Option<usize>,
    },
    /// Write synthetic phantom radiographs as DICOM files (DX, chest), with their ground truth
    /// in truth.json: demo and test input that takes the same path as a real study.
    Phantoms {
        #[arg(long, default_value = "phantoms")]
        out: PathBuf,
        #[arg(long, default_value_t = 8)]
        count: u64,
        /// A seed other than the training and validation seeds.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Image side in pixels.
        #[arg(long, default_value_t = 256)]
        size: usize,
    },
}

pub(super) fn run(command: ModelsCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    let dir = &settings.analysis.models_dir;
    match command {
        ModelsCommand::List => list(&open(dir)?, dir),
        ModelsCommand::Verify => Ok(verify(&open(dir)?)),
        ModelsCommand::Import { weights, description } => {
            let imported =
                radsight_vision::import::import_model(&weights, &description, dir).map_err(|e| anyhow::anyhow!("import refused: {e}"))?;
            println!(
                "imported {} {} ({}, {} tensors{}) into {} (sha256 {})",
                imported.id,
                imported.version,
                imported.card.architecture.name(),
                imported.tensors,
                if imported.converted_from.is_empty() {
                    String::new()
                } else {
                    format!(", converted from {}", imported.converted_from.join("/"))
                },
                imported.dir.display(),
                imported.sha256
            );
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Train { out, seed, steps } => {
            let defaults = radsight_vision::train::TrainConfig::default();
            let config = radsight_vision::train::TrainConfig { seed, steps: steps.unwrap_or(defaults.steps), ..defaults };
            let report = radsight_vision::train::train(&config, &out, |line| eprintln!("{line}"))
                .map_err(|e| anyhow::anyhow!("training failed: {e}"))?;
            println!(
                "wrote {} {} to {} in {:.0} s (sha256 {})",
                report.card.id,
                report.card.version,
                out.display(),
                report.seconds,
                report.card.weights.sha256
            );
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Phantoms { out, count, seed, size } => phantoms(&out, count, seed, size),
    }
}

fn open(dir: &Path) -> anyhow::Result<Registry> {
    Registry::open(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))
}

fn list(registry: &Registry, dir: &Path) -> anyhow::Result<ExitCode> {
    println!("{:<28}  {:<8}  {:<14}  {:<30}  {:<12}  STATUS", "ID", "VERSION", "ARCHITECTURE", "LABELS (threshold)", "WEIGHTS");
    for m in registry.models() {
        let c = &m.card;
        let labels: Vec<String> = c.labels.iter().map(|l| format!("{} ({:.2})", l.name, l.threshold)).collect();
        println!(
            "{:<28}  {:<8}  {:<14}  {:<30}  {:<12}  {}",
            c.id,
            c.version,
            c.architecture.name(),
            labels.join(", "),
            &c.weights.sha256[..12.min(c.weights.sha256.len())],
            c.status
        );
    }
    eprintln!("{} model(s) in {}", registry.models().len(), dir.display());
    Ok(ExitCode::SUCCESS)
}

/// Exit 1 if any model's weights do not match its card.
fn verify(registry: &Registry) -> ExitCode {
    let mut bad = 0;
    for (id, outcome) in registry.verify_all() {
        match outcome {
            Ok(v) => println!("ok        {id} {} sha256:{}", v.version, v.sha256),
            Err(e) => {
                bad += 1;
                println!("REFUSED   {id}: {e}");
            }
        }
    }
    if bad > 0 {
        eprintln!("{bad} model(s) do not match their cards");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Writes `count` phantoms as `phantom-NNNN.dcm` and their labels in `truth.json`.
fn phantoms(out: &Path, count: u64, seed: u64, size: usize) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let config = radsight_vision::phantom::PhantomConfig { size, ..Default::default() };
    let mut truth = Vec::new();
    for i in 0..count {
        let p = radsight_vision::phantom::generate(&config, seed, i);
        let study = format!("2.25.{}", uuid::Uuid::new_v4().as_u128());
        let meta = PhantomInstance {
            patient_id: "PHANTOM",
            study_uid: &study,
            series_uid: &format!("{study}.1"),
            sop_uid: &format!("{study}.1.1"),
            accession: &format!("PH{i:05}"),
        };
        let bytes = phantom_part10(&meta, size as u16, size as u16, p.image.data());
        let name = format!("phantom-{:04}.dcm", i + 1);
        std::fs::write(out.join(&name), bytes).with_context(|| format!("writing {name}"))?;
        let labels: serde_json::Map<String, serde_json::Value> = radsight_vision::phantom::PHANTOM_LABELS
            .iter()
            .zip(&p.labels)
            .map(|(l, present)| (l.to_string(), serde_json::Value::from(*present)))
            .collect();
        truth.push(serde_json::json!({"file": name, "labels": labels}));
    }
    std::fs::write(out.join("truth.json"), serde_json::to_string_pretty(&truth)?).context("writing truth.json")?;
    println!("wrote {count} phantom(s) to {}", out.display());
    Ok(ExitCode::SUCCESS)
}
