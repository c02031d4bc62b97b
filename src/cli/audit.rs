//! `radsight audit`: verify the trail against its checkpoints, sign a checkpoint, print the
//! verifier key, prove an entry's inclusion, and export entries (the export is itself audited).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use sea_orm::{DatabaseConnection, EntityTrait, QueryOrder};

use crate::audit::checkpoint::{CheckpointSigner, VerifierKey};
use crate::audit::proof::{Attach, inclusion_document};
use crate::audit::verify::{VerifyError, VerifyOptions, verify_log};
use crate::audit::{Action, AuditEvent, AuditLog, Outcome, export};
use crate::configuration::Settings;
use crate::store;
use crate::store::entities::audit_checkpoint;

#[derive(Subcommand)]
pub(super) enum AuditCommand {
    /// Recompute every entry, the chain and the Merkle tree, and check them against every
    /// checkpoint (stored and published); exit 2 naming the first problem.
    Verify {
        /// Directory of published checkpoints (default: audit.checkpoint_dir).
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// The log's verifier key (default: derived from audit.checkpoint_key_file).
        #[arg(long)]
        vkey: Option<String>,
    },
    /// Sign and publish a checkpoint of the log now.
    Checkpoint,
    /// Print the verifier key that auditors use to check checkpoints.
    Vkey,
    /// Print an inclusion proof for the entry at leaf INDEX (sequence number − 1) against the
    /// latest checkpoint, with the entry and the checkpoint, checkable without radsight.
    Prove {
        index: u64,
        /// Prove against this tree size instead of the latest checkpoint's.
        #[arg(long)]
        tree_size: Option<u64>,
    },
    /// Export entries as a FHIR R4 Bundle of AuditEvents, JSON Lines or CSV.
    Export {
        #[arg(long, default_value = "fhir", value_parser = ["fhir", "jsonl", "csv"])]
        format: String,
        /// RFC 3339 instant, inclusive.
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339 instant, exclusive.
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        patient: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        model: Option<String>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub(super) async fn run(command: AuditCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    let db = store::connect(&settings.database).await?;
    let audit_settings = &settings.audit;
    match command {
        AuditCommand::Verify { checkpoints, vkey } => verify(&db, settings, checkpoints, vkey).await,
        AuditCommand::Checkpoint => {
            let signer = CheckpointSigner::load_or_create(&audit_settings.checkpoint_key_file, &audit_settings.origin)?;
            match AuditLog::default().checkpoint(&db, &signer, Some(&audit_settings.checkpoint_dir)).await? {
                Some((size, note)) => {
                    eprintln!("checkpoint of {size} entries published to {}", audit_settings.checkpoint_dir.display());
                    print!("{note}");
                }
                None => eprintln!("the log is empty: nothing to sign"),
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Vkey => {
            let signer = CheckpointSigner::load(&audit_settings.checkpoint_key_file, &audit_settings.origin)?;
            println!("{}", signer.verifier_key());
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Prove { index, tree_size } => prove(&db, index, tree_size).await,
        AuditCommand::Export { format, from, to, patient, actor, action, model, out } => {
            let parse =
                |v: Option<String>| v.map(|v| time::OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc3339)).transpose();
            let filter =
                export::Filter { from: parse(from)?, to: parse(to)?, patient: patient.clone(), actor, action, model, entity: None };
            let format = export::Format::parse(&format).context("unknown format")?;
            let entries = export::select(&db, &filter, u64::MAX).await?;
            let body = export::render(&entries, format, &audit_settings.origin);
            match &out {
                Some(path) => std::fs::write(path, &body).with_context(|| format!("writing {}", path.display()))?,
                None => print!("{body}"),
            }
            let event = AuditEvent::new(Action::AuditExport, Outcome::Success)
                .actor(None, Some(&super::os_user()))
                .patient(patient.map(|p| if p.starts_with("Patient/") { p } else { format!("Patient/{p}") }))
                .entity("AuditLog", "export")
                .detail("count", entries.len())
                .detail("via", "cli");
            AuditLog::default().record(&db, event).await?;
            eprintln!("exported {} entries", entries.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Checks the whole trail; exit 2 naming the first problem if it is broken.
async fn verify(
    db: &DatabaseConnection,
    settings: &Settings,
    checkpoints: Option<PathBuf>,
    vkey: Option<String>,
) -> anyhow::Result<ExitCode> {
    let audit_settings = &settings.audit;
    let dir = checkpoints.unwrap_or_else(|| audit_settings.checkpoint_dir.clone());
    let verifier = match vkey {
        Some(v) => Some(VerifierKey::parse(&v)?),
        None if audit_settings.checkpoint_key_file.exists() => {
            let signer = CheckpointSigner::load(&audit_settings.checkpoint_key_file, &audit_settings.origin)?;
            Some(VerifierKey::parse(&signer.verifier_key())?)
        }
        None => None,
    };
    let opts = VerifyOptions { published_dir: Some(&dir), verifier: verifier.as_ref() };
    match verify_log(db, &opts).await {
        Ok(r) => {
            println!(
                "audit trail intact: {} entries, root {}, {} checkpoints matched{}",
                r.entries,
                r.root,
                r.checkpoints,
                if r.signatures_checked { " (signatures verified)" } else { " (no verifier key: signatures NOT checked)" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(VerifyError::Broken(b)) => {
            eprintln!("audit trail BROKEN: {b}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e.into()),
    }
}

/// Prints the inclusion proof of leaf `index` with its entry, against `tree_size` or else the
/// latest checkpoint (whose note it attaches).
async fn prove(db: &DatabaseConnection, index: u64, tree_size: Option<u64>) -> anyhow::Result<ExitCode> {
    let latest = audit_checkpoint::Entity::find()
        .order_by_desc(audit_checkpoint::Column::TreeSize)
        .one(db)
        .await
        .context("reading the latest checkpoint")?;
    let (size, checkpoint_note) = match (tree_size, latest) {
        (Some(n), _) => (n, None),
        (None, Some(c)) => (c.tree_size as u64, Some(c.note)),
        (None, None) => anyhow::bail!("no checkpoint has been signed yet; run `radsight audit checkpoint` or pass --tree-size"),
    };
    let document = inclusion_document(db, index, size, Attach::EntryAndCheckpoint { checkpoint_note }).await?;
    println!("{}", serde_json::to_string_pretty(&document).context("serialising the proof")?);
    Ok(ExitCode::SUCCESS)
}
