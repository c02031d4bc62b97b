//! The `radsight` command line: the clap definition of every command and [`run`], which hands
//! each command group to its own module. `src/main.rs` only parses, builds the runtime and
//! calls [`run`].
//!
//! Output text, flags and exit codes are part of the interface (the tests assert on them):
//! 0 on success, 1 on a failure the command reports itself, 2 where a command says so (a
//! broken audit trail, no such dead job or delivery).

mod analyze;
mod audit;
mod jobs;
mod keys;
mod models;
mod outbox;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::configuration::Settings;
use crate::store;

#[derive(Parser)]
#[command(name = "radsight", version, about = "Explainable imaging AI for the EHR")]
pub struct Cli {
    /// Configuration file (default: ./radsight.toml if present).
    #[arg(long, global = true, env = "RADSIGHT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the CDS Hooks service (migrates the database first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Inspect the audit trail.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Signing keys: client keys for testing a CDS client, and radsight's own keyring.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Inspect and revive analysis jobs.
    Jobs {
        #[command(subcommand)]
        command: jobs::JobsCommand,
    },
    /// Inspect and revive deliveries of results to the PACS, the RIS and the EHR.
    Outbox {
        #[command(subcommand)]
        command: outbox::OutboxCommand,
    },
    /// The model registry: list, verify weights against their cards, train the shipped model.
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
    },
    /// Run the analysis pipeline on local DICOM files (a file or a folder): prints the
    /// findings, writes the pictures and report.json to --out, and audits the run.
    Analyze {
        input: PathBuf,
        /// Where the pictures and report.json go.
        #[arg(long, default_value = "radsight-analysis")]
        out: PathBuf,
        /// Run this model instead of the routed one.
        #[arg(long)]
        model: Option<String>,
    },
}

/// Runs one parsed command; the exit code it asks for, or the error to report.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Serve => serve::serve(config).await,
        Command::Migrate => serve::migrate(config).await,
        Command::Audit { command } => audit::run(command, &Settings::load(config)?).await,
        Command::Keys { command } => keys::run(command, config),
        Command::Jobs { command } => jobs::run(command, &Settings::load(config)?).await,
        Command::Outbox { command } => outbox::run(command, &Settings::load(config)?).await,
        Command::Models { command } => models::run(command, &Settings::load(config)?),
        Command::Analyze { input, out, model } => analyze::run(&Settings::load(config)?, &input, &out, model.as_deref()).await,
    }
}

/// The database of `settings`, migrated to the current schema.
async fn migrated_db(settings: &Settings) -> anyhow::Result<sea_orm::DatabaseConnection> {
    let db = store::connect(&settings.database).await?;
    store::migrate(&db).await?;
    Ok(db)
}

/// The audit actor for a command run by hand: the operating-system user.
fn os_user() -> String {
    format!("os-user:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}
