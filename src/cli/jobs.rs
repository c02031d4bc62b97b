//! `radsight jobs`: list analysis jobs and put a dead one back in the queue (audited).

use std::process::ExitCode;

use clap::Subcommand;
use sea_orm::DatabaseConnection;

use crate::audit::{Action, AuditEvent, AuditLog, Outcome};
use crate::configuration::Settings;
use crate::jobs;

#[derive(Subcommand)]
pub(super) enum JobsCommand {
    /// List jobs, newest first.
    List {
        /// Only jobs in this state (queued, running, succeeded, dead).
        #[arg(long)]
        state: Option<String>,
    },
    /// Put a dead job back in the queue with a fresh set of attempts.
    Retry { id: String },
}

pub(super) async fn run(command: JobsCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    let db = super::migrated_db(settings).await?;
    match command {
        JobsCommand::List { state } => list(&db, state.as_deref()).await,
        JobsCommand::Retry { id } => retry(&db, &id).await,
    }
}

async fn list(db: &DatabaseConnection, state: Option<&str>) -> anyhow::Result<ExitCode> {
    let rows = jobs::list(db, state).await?;
    println!("{:<36}  {:<9}  {:<13}  {:>8}  {:<24}  {:<64}", "ID", "STATE", "STAGE", "ATTEMPTS", "LAST ERROR", "STUDY");
    for j in &rows {
        println!(
            "{:<36}  {:<9}  {:<13}  {:>8}  {:<24}  {:<64}",
            j.id,
            j.state,
            j.stage.as_deref().unwrap_or("-"),
            format!("{}/{}", j.attempts, j.max_attempts),
            j.last_error.as_deref().unwrap_or("-"),
            j.study_uid
        );
    }
    eprintln!("{} job(s)", rows.len());
    Ok(ExitCode::SUCCESS)
}

/// Requeues a dead job and records `job.retried` in the same transaction; exit 2 if there is
/// no dead job with that id.
async fn retry(db: &DatabaseConnection, id: &str) -> anyhow::Result<ExitCode> {
    let audit = AuditLog::default();
    let mut txn = audit.begin(db).await?;
    if !jobs::retry(txn.conn(), id).await? {
        eprintln!("no dead job with id {id}");
        return Ok(ExitCode::from(2));
    }
    txn.append(AuditEvent::new(Action::JobRetried, Outcome::Success).actor(None, Some("cli")).entity("Job", id.to_owned())).await?;
    txn.commit().await?;
    println!("job {id} queued again");
    Ok(ExitCode::SUCCESS)
}
