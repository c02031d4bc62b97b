//! The `radsight` command: wires configuration, storage and the service together.
//!
//! `radsight serve` runs the service on its embedded defaults (SQLite at ./data/radsight.db,
//! port 8080); `radsight --help` lists the rest.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use radsight::audit::verify::{VerifyError, verify_chain};
use radsight::configuration::Settings;
use radsight::keys::ClientKey;
use radsight::startup::Application;
use radsight::audit::{Action, AuditEvent, AuditLog, Outcome};
use radsight::{jobs, store, telemetry};

#[derive(Parser)]
#[command(name = "radsight", version, about = "Explainable imaging AI for the EHR")]
struct Cli {
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
        command: AuditCommand,
    },
    /// Client signing keys, for registering and testing a CDS client.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Inspect and revive analysis jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// List jobs, newest first.
    List {
        /// Only jobs in this state (queued, running, succeeded, dead).
        #[arg(long)]
        state: Option<String>,
    },
    /// Put a dead job back in the queue with a fresh set of attempts.
    Retry { id: String },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain; exits non-zero naming the first bad entry.
    Verify,
}

#[derive(Clone, Copy, ValueEnum)]
enum Alg {
    Es384,
    Es256,
    Rs384,
    Rs256,
}

impl From<Alg> for jsonwebtoken::Algorithm {
    fn from(a: Alg) -> Self {
        match a {
            Alg::Es384 => jsonwebtoken::Algorithm::ES384,
            Alg::Es256 => jsonwebtoken::Algorithm::ES256,
            Alg::Rs384 => jsonwebtoken::Algorithm::RS384,
            Alg::Rs256 => jsonwebtoken::Algorithm::RS256,
        }
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a key pair: writes DIR/client.key.pem and DIR/client.jwks.json, prints the JWKS.
    Generate {
        #[arg(long, value_enum, default_value = "es384")]
        alg: Alg,
        #[arg(long, default_value = "keys")]
        out: PathBuf,
    },
    /// Print a signed CDS client JWT for one call.
    Token {
        #[arg(long)]
        key: PathBuf,
        #[arg(long, value_enum, default_value = "es384")]
        alg: Alg,
        /// The client's registered issuer.
        #[arg(long)]
        iss: String,
        /// The exact URL that will be called, e.g. http://localhost:8080/cds-services/radsight-patient-view
        #[arg(long)]
        aud: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&anyhow::Error::new(e).context("starting the async runtime")),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve => {
            telemetry::init();
            let settings = Settings::load(cli.config.as_deref())?;
            let app = Application::build(settings).await?;
            tracing::info!(port = app.port(), hl7_port = app.hl7_port(), "radsight is serving");
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            let settings = Settings::load(cli.config.as_deref())?;
            let db = store::connect(&settings.database).await?;
            store::migrate(&db).await?;
            println!("migrations applied");
        }
        Command::Audit { command: AuditCommand::Verify } => {
            let settings = Settings::load(cli.config.as_deref())?;
            let db = store::connect(&settings.database).await?;
            match verify_chain(&db).await {
                Ok(report) => println!("audit trail intact: {} entries, head {}", report.entries, report.head_hash),
                Err(VerifyError::Broken(b)) => {
                    eprintln!("audit trail BROKEN: {b}");
                    return Ok(ExitCode::from(2));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Command::Jobs { command } => {
            let settings = Settings::load(cli.config.as_deref())?;
            let db = store::connect(&settings.database).await?;
            store::migrate(&db).await?;
            return run_jobs_command(&db, command).await;
        }
        Command::Keys { command: KeysCommand::Generate { alg, out } } => {
            let key = ClientKey::generate(alg.into())?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let key_path = out.join("client.key.pem");
            write_private(&key_path, &key.to_pem())?;
            let jwks = serde_json::to_string_pretty(&key.jwks())?;
            std::fs::write(out.join("client.jwks.json"), &jwks)?;
            eprintln!("private key: {} (keep it secret)\nJWKS: {}", key_path.display(), out.join("client.jwks.json").display());
            println!("{jwks}");
        }
        Command::Keys { command: KeysCommand::Token { key, alg, iss, aud } } => {
            let pem = std::fs::read_to_string(&key).with_context(|| format!("reading {}", key.display()))?;
            let key = ClientKey::from_pem(alg.into(), &pem)?;
            println!("{}", key.client_token(&iss, &aud)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_jobs_command(db: &sea_orm::DatabaseConnection, command: JobsCommand) -> anyhow::Result<ExitCode> {
    match command {
        JobsCommand::List { state } => {
            let rows = jobs::list(db, state.as_deref()).await?;
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
        }
        JobsCommand::Retry { id } => {
            let audit = AuditLog::default();
            let mut txn = audit.begin(db).await?;
            if !jobs::retry(txn.conn(), &id).await? {
                eprintln!("no dead job with id {id}");
                return Ok(ExitCode::from(2));
            }
            txn.append(AuditEvent::new(Action::JobRetried, Outcome::Success).actor(None, Some("cli")).entity("Job", id.clone())).await?;
            txn.commit().await?;
            println!("job {id} queued again");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_private(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}
