//! The `radsight` command: wires configuration, storage and the service together.
//!
//! `radsight serve` runs the service on its embedded defaults (SQLite at ./data/radsight.db,
//! port 8080); `radsight --help` lists the rest.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use radsight::audit::checkpoint::{CheckpointSigner, VerifierKey};
use radsight::audit::verify::{VerifyError, VerifyOptions, verify_log};
use radsight::audit::{Action, AuditEvent, AuditLog, Outcome, canonical_bytes, export, tree};
use radsight::store::entities::{audit_checkpoint, audit_entry};
use sea_orm::{EntityTrait, QueryOrder};
use radsight::configuration::Settings;
use radsight::keys::ClientKey;
use radsight::startup::Application;
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
    /// The model registry: list, verify weights against their cards, train the shipped model.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
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

#[derive(Subcommand)]
enum ModelsCommand {
    /// The models in the registry, with their cards' key facts.
    List,
    /// Recompute every model's weights SHA-256 and compare it with its card; exit 1 on a mismatch.
    Verify,
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
        /// A `scope` claim, e.g. "audit.read" for an auditor.
        #[arg(long)]
        scope: Option<String>,
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
        Command::Audit { command } => return audit_command(command, Settings::load(cli.config.as_deref())?).await,
        Command::Jobs { command } => {
            let settings = Settings::load(cli.config.as_deref())?;
            let db = store::connect(&settings.database).await?;
            store::migrate(&db).await?;
            return run_jobs_command(&db, command).await;
        }
        Command::Models { command } => return models_command(command, &Settings::load(cli.config.as_deref())?),
        Command::Analyze { input, out, model } => {
            let settings = Settings::load(cli.config.as_deref())?;
            return analyze_command(&settings, &input, &out, model.as_deref()).await;
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
        Command::Keys { command: KeysCommand::Token { key, alg, iss, aud, scope } } => {
            let pem = std::fs::read_to_string(&key).with_context(|| format!("reading {}", key.display()))?;
            let key = ClientKey::from_pem(alg.into(), &pem)?;
            let token = match scope {
                None => key.client_token(&iss, &aud)?,
                Some(scope) => key.scoped_token(&iss, &aud, &scope)?,
            };
            println!("{token}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn audit_command(command: AuditCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    let db = store::connect(&settings.database).await?;
    let audit_settings = &settings.audit;
    match command {
        AuditCommand::Verify { checkpoints, vkey } => {
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
            match verify_log(&db, &opts).await {
                Ok(r) => {
                    println!(
                        "audit trail intact: {} entries, root {}, {} checkpoints matched{}",
                        r.entries,
                        r.root,
                        r.checkpoints,
                        if r.signatures_checked { " (signatures verified)" } else { " (no verifier key: signatures NOT checked)" }
                    );
                }
                Err(VerifyError::Broken(b)) => {
                    eprintln!("audit trail BROKEN: {b}");
                    return Ok(ExitCode::from(2));
                }
                Err(e) => return Err(e.into()),
            }
        }
        AuditCommand::Checkpoint => {
            let signer = CheckpointSigner::load_or_create(&audit_settings.checkpoint_key_file, &audit_settings.origin)?;
            match AuditLog::default().checkpoint(&db, &signer, Some(&audit_settings.checkpoint_dir)).await? {
                Some((size, note)) => {
                    eprintln!("checkpoint of {size} entries published to {}", audit_settings.checkpoint_dir.display());
                    print!("{note}");
                }
                None => eprintln!("the log is empty: nothing to sign"),
            }
        }
        AuditCommand::Vkey => {
            let signer = CheckpointSigner::load(&audit_settings.checkpoint_key_file, &audit_settings.origin)?;
            println!("{}", signer.verifier_key());
        }
        AuditCommand::Prove { index, tree_size } => {
            let latest = audit_checkpoint::Entity::find().order_by_desc(audit_checkpoint::Column::TreeSize).one(&db).await?;
            let (size, note) = match (tree_size, latest) {
                (Some(n), _) => (n, None),
                (None, Some(c)) => (c.tree_size as u64, Some(c.note)),
                (None, None) => anyhow::bail!("no checkpoint has been signed yet; run `radsight audit checkpoint` or pass --tree-size"),
            };
            anyhow::ensure!(index < size, "leaf {index} is not in a tree of {size} entries");
            let entry = audit_entry::Entity::find_by_id(index as i64 + 1).one(&db).await?.context("no such entry")?;
            let (leaf, proof) = tree::inclusion_proof(&db, index, size).await?;
            let root = tree::root(&db, size).await?;
            let out = serde_json::json!({
                "index": index,
                "tree_size": size,
                "entry": String::from_utf8(canonical_bytes(&entry)).expect("canonical form is UTF-8"),
                "leaf_hash": tree::to_hex(&leaf),
                "proof": proof.iter().map(tree::to_hex).collect::<Vec<_>>(),
                "root_hash": tree::to_hex(&root),
                "checkpoint": note,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        AuditCommand::Export { format, from, to, patient, actor, action, model, out } => {
            let parse = |v: Option<String>| v.map(|v| time::OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc3339)).transpose();
            let filter = export::Filter { from: parse(from)?, to: parse(to)?, patient: patient.clone(), actor, action, model, entity: None };
            let format = export::Format::parse(&format).context("unknown format")?;
            let entries = export::select(&db, &filter, u64::MAX).await?;
            let body = export::render(&entries, format, &audit_settings.origin);
            match &out {
                Some(path) => std::fs::write(path, &body).with_context(|| format!("writing {}", path.display()))?,
                None => print!("{body}"),
            }
            let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
            let event = AuditEvent::new(Action::AuditExport, Outcome::Success)
                .actor(None, Some(&format!("os-user:{user}")))
                .patient(patient.map(|p| if p.starts_with("Patient/") { p } else { format!("Patient/{p}") }))
                .entity("AuditLog", "export")
                .detail("count", entries.len())
                .detail("via", "cli");
            AuditLog::default().record(&db, event).await?;
            eprintln!("exported {} entries", entries.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn models_command(command: ModelsCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    let dir = &settings.analysis.models_dir;
    match command {
        ModelsCommand::List => {
            let registry = radsight_vision::Registry::open(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
            println!("{:<28}  {:<8}  {:<14}  {:<30}  {:<12}  STATUS", "ID", "VERSION", "ARCHITECTURE", "LABELS (threshold)", "WEIGHTS");
            for m in registry.models() {
                let c = &m.card;
                let labels: Vec<String> = c.labels.iter().map(|l| format!("{} ({:.2})", l.name, l.threshold)).collect();
                println!(
                    "{:<28}  {:<8}  {:<14}  {:<30}  {:<12}  {}",
                    c.id,
                    c.version,
                    match c.architecture {
                        radsight_vision::card::Architecture::CompactCnn(_) => "compact-cnn",
                        radsight_vision::card::Architecture::Resnet(_) => "resnet",
                    },
                    labels.join(", "),
                    &c.weights.sha256[..12.min(c.weights.sha256.len())],
                    c.status
                );
            }
            eprintln!("{} model(s) in {}", registry.models().len(), dir.display());
        }
        ModelsCommand::Verify => {
            let registry = radsight_vision::Registry::open(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
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
                return Ok(ExitCode::FAILURE);
            }
        }
        ModelsCommand::Train { out, seed, steps } => {
            let mut config = radsight_vision::train::TrainConfig::default();
            config.seed = seed;
            if let Some(steps) = steps {
                config.steps = steps;
            }
            let report = radsight_vision::train::train(&config, &out, |line| eprintln!("{line}"))
                .map_err(|e| anyhow::anyhow!("training failed: {e}"))?;
            println!("wrote {} {} to {} in {:.0} s (sha256 {})", report.card.id, report.card.version, out.display(), report.seconds, report.card.weights.sha256);
        }
        ModelsCommand::Phantoms { out, count, seed, size } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let config = radsight_vision::phantom::PhantomConfig { size, ..Default::default() };
            let mut truth = Vec::new();
            for i in 0..count {
                let p = radsight_vision::phantom::generate(&config, seed, i);
                let study = format!("2.25.{}", uuid::Uuid::new_v4().as_u128());
                let meta = radsight::analysis::phantom_dicom::PhantomInstance {
                    patient_id: "PHANTOM",
                    study_uid: &study,
                    series_uid: &format!("{study}.1"),
                    sop_uid: &format!("{study}.1.1"),
                    accession: &format!("PH{i:05}"),
                };
                let bytes = radsight::analysis::phantom_dicom::phantom_part10(&meta, size as u16, size as u16, p.image.data());
                let name = format!("phantom-{:04}.dcm", i + 1);
                std::fs::write(out.join(&name), bytes).with_context(|| format!("writing {name}"))?;
                let labels: serde_json::Map<String, serde_json::Value> = radsight_vision::phantom::PHANTOM_LABELS
                    .iter()
                    .zip(&p.labels)
                    .map(|(l, present)| (l.to_string(), serde_json::Value::from(*present)))
                    .collect();
                truth.push(serde_json::json!({"file": name, "labels": labels}));
            }
            std::fs::write(out.join("truth.json"), serde_json::to_string_pretty(&truth)?)?;
            println!("wrote {count} phantom(s) to {}", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn analyze_command(settings: &Settings, input: &std::path::Path, out: &std::path::Path, model: Option<&str>) -> anyhow::Result<ExitCode> {
    let analyzer = radsight::analysis::Analyzer::open(&settings.analysis)?;
    let inputs = radsight::analysis::local::collect_inputs(input)?;
    if inputs.is_empty() {
        anyhow::bail!("no files under {}", input.display());
    }
    let db = store::connect(&settings.database).await?;
    store::migrate(&db).await?;
    let (analyzer, inputs2, out2, model2) = (std::sync::Arc::new(analyzer), inputs.clone(), out.to_owned(), model.map(str::to_owned));
    let run = tokio::task::spawn_blocking(move || radsight::analysis::local::run(&analyzer, &inputs2, &out2, model2.as_deref())).await?;
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let event = match &run {
        Ok(r) => {
            let results = r.report["results"].as_array().cloned().unwrap_or_default();
            let summary: Vec<serde_json::Value> = results
                .iter()
                .map(|i| serde_json::json!({"status": i["status"], "pixel_sha256": i["pixelSha256"], "model": i["model"], "reason": i["reason"],
                    "findings": i["findings"].as_array().map(|f| f.iter().map(|x| serde_json::json!({"code": x["code"], "probability": x["probability"]})).collect::<Vec<_>>())}))
                .collect();
            AuditEvent::new(Action::AnalyzeRun, if r.failed == 0 { Outcome::Success } else { Outcome::Error })
                .detail("files", inputs.len())
                .detail("analysed", r.analysed)
                .detail("failed", r.failed)
                .detail("results", summary)
        }
        Err(e) => AuditEvent::new(Action::AnalyzeRun, Outcome::Error).detail("files", inputs.len()).detail("reason", if e.to_string().contains("refused") { "model-refused" } else { "error" }),
    }
    .actor(None, Some(&format!("os-user:{user}")))
    .detail("via", "cli");
    AuditLog::default().record(&db, event).await?;
    let run = run?;
    for item in run.report["results"].as_array().into_iter().flatten() {
        match item["status"].as_str() {
            Some("done") => {
                let model = &item["model"];
                println!("{}  ({} {})", item["file"].as_str().unwrap_or(""), model["id"].as_str().unwrap_or(""), model["version"].as_str().unwrap_or(""));
                for f in item["findings"].as_array().into_iter().flatten() {
                    let (p, t) = (f["probability"].as_f64().unwrap_or(0.0), f["threshold"].as_f64().unwrap_or(0.0));
                    println!("    {:<24} p={p:.3}  threshold {t:.2}  {}", f["display"].as_str().unwrap_or(""), if p >= t { "POSITIVE" } else { "negative" });
                }
                let fa = &item["faithfulness"];
                println!(
                    "    saliency {}: deletion AUC {:.3} (random map {:.3})",
                    item["saliency"]["method"].as_str().unwrap_or(""),
                    fa["deletionAuc"].as_f64().unwrap_or(f64::NAN),
                    fa["randomDeletionAuc"].as_f64().unwrap_or(f64::NAN)
                );
            }
            _ => println!("{}  FAILED: {}", item["file"].as_str().unwrap_or(""), item["error"].as_str().unwrap_or("")),
        }
    }
    println!("AI findings support and do not replace the clinician's judgement.");
    eprintln!("{} analysed, {} failed; pictures and report.json in {}", run.analysed, run.failed, out.display());
    Ok(if run.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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
