//! `radsight analyze`: runs [`crate::analysis::local::run`] on local DICOM files off the async
//! runtime, records the run as one `analyze.run` audit entry (success or not), then prints the
//! findings from the typed report. Exit 1 if any file failed.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::analysis::Analyzer;
use crate::analysis::local::{self, LocalItem, LocalReport};
use crate::audit::{Action, AuditEvent, AuditLog, Outcome};
use crate::configuration::Settings;

pub(super) async fn run(settings: &Settings, input: &Path, out: &Path, model: Option<&str>) -> anyhow::Result<ExitCode> {
    let analyzer = Arc::new(Analyzer::open(&settings.analysis)?);
    let inputs = local::collect_inputs(input)?;
    if inputs.is_empty() {
        anyhow::bail!("no files under {}", input.display());
    }
    let db = super::migrated_db(settings).await?;
    let files = inputs.len();
    let (out_dir, model) = (out.to_owned(), model.map(str::to_owned));
    let run = tokio::task::spawn_blocking(move || local::run(&analyzer, &inputs, &out_dir, model.as_deref()))
        .await
        .context("the analysis thread failed")?;
    let event = match &run {
        Ok(report) => {
            let results: Vec<_> = report.results.iter().map(LocalItem::audited).collect();
            let results = serde_json::to_value(results).context("summarising the run for the audit trail")?;
            AuditEvent::new(Action::AnalyzeRun, if report.failed() == 0 { Outcome::Success } else { Outcome::Error })
                .detail("files", files)
                .detail("analysed", report.analysed())
                .detail("failed", report.failed())
                .detail("results", results)
        }
        Err(e) => AuditEvent::new(Action::AnalyzeRun, Outcome::Error).detail("files", files).detail("reason", e.audit_reason()),
    }
    .actor(None, Some(&super::os_user()))
    .detail("via", "cli");
    AuditLog::default().record(&db, event).await.context("recording the run in the audit trail")?;
    let report = run?;
    print_findings(&report);
    eprintln!("{} analysed, {} failed; pictures and report.json in {}", report.analysed(), report.failed(), out.display());
    Ok(if report.failed() == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_findings(report: &LocalReport) {
    for item in &report.results {
        match item {
            LocalItem::Done(d) => {
                println!("{}  ({} {})", d.file, d.model.id, d.model.version);
                for f in &d.findings {
                    println!(
                        "    {:<24} p={:.3}  threshold {:.2}  {}",
                        f.display,
                        f.probability,
                        f.threshold,
                        if f.is_positive() { "POSITIVE" } else { "negative" }
                    );
                }
                match (d.faithfulness.deletion_auc, d.faithfulness.random_deletion_auc) {
                    (Some(auc), Some(random)) => {
                        println!("    saliency {}: deletion AUC {auc:.3} (random map {random:.3})", d.saliency.method)
                    }
                    _ => println!("    saliency {}: the mask is the explanation (no deletion measure)", d.saliency.method),
                }
            }
            LocalItem::Failed(f) => println!("{}  FAILED: {}", f.file, f.error),
        }
    }
    println!("{}", local::NOTICE);
}
