//! `radsight outbox`: list deliveries of results to other systems, and put a dead one back in
//! the queue (audited). A revived delivery sends the object it built first (same SOP Instance
//! UID, same HL7 control id, same conditional creates), so the destination keeps one copy.

use std::process::ExitCode;

use clap::Subcommand;
use sea_orm::DatabaseConnection;

use crate::audit::{Action, AuditEvent, AuditLog, Outcome};
use crate::configuration::Settings;
use crate::outbox;

#[derive(Subcommand)]
pub(super) enum OutboxCommand {
    /// List deliveries, newest first.
    List {
        /// Only deliveries in this state (pending, delivering, delivered, dead).
        #[arg(long)]
        state: Option<String>,
    },
    /// Put a dead delivery back in the queue with a fresh set of attempts.
    Retry { id: String },
}

pub(super) async fn run(command: OutboxCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    let db = super::migrated_db(settings).await?;
    match command {
        OutboxCommand::List { state } => list(&db, state.as_deref()).await,
        OutboxCommand::Retry { id } => retry(&db, &id).await,
    }
}

async fn list(db: &DatabaseConnection, state: Option<&str>) -> anyhow::Result<ExitCode> {
    let rows = outbox::list(db, state).await?;
    println!("{:<36}  {:<10}  {:<11}  {:>8}  {:<36}  {:<40}  LAST ERROR", "ID", "STATE", "KIND", "ATTEMPTS", "RESULT", "DESTINATION");
    for d in &rows {
        println!(
            "{:<36}  {:<10}  {:<11}  {:>8}  {:<36}  {:<40}  {}",
            d.id,
            d.state,
            d.kind,
            format!("{}/{}", d.attempts, d.max_attempts),
            d.result_id,
            d.destination,
            d.last_error.as_deref().unwrap_or("-"),
        );
    }
    eprintln!("{} deliver{}", rows.len(), if rows.len() == 1 { "y" } else { "ies" });
    Ok(ExitCode::SUCCESS)
}

/// Requeues a dead delivery and records `output.delivery` (retried) in the same transaction;
/// exit 2 if there is no dead delivery with that id.
async fn retry(db: &DatabaseConnection, id: &str) -> anyhow::Result<ExitCode> {
    let audit = AuditLog::default();
    let mut txn = audit.begin(db).await?;
    if !outbox::retry(txn.conn(), id).await? {
        eprintln!("no dead delivery with id {id}");
        return Ok(ExitCode::from(2));
    }
    txn.append(
        AuditEvent::new(Action::OutputDelivery, Outcome::Success)
            .actor(None, Some("cli"))
            .entity("OutboxDelivery", id.to_owned())
            .detail("retried", true),
    )
    .await?;
    txn.commit().await?;
    println!("delivery {id} is pending again");
    Ok(ExitCode::SUCCESS)
}
