//! Building and running the service: `Application::build(settings)` binds (port 0 picks a free
//! port, for tests), connects and migrates the database, builds the core state and each
//! feature's own, wires the routes, and starts the MLLP listener and the job workers. This is
//! the top of the layers: it may import anything; nothing imports it.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::{App, HttpServer, middleware, web};
use anyhow::Context;
use sea_orm::DatabaseConnection;

use crate::audit::AuditLog;
use crate::audit::checkpoint::CheckpointSigner;
use crate::auth::client_jwt::{ClientVerifier, purge_expired_jtis};
use crate::auth::jwks::KeyStore;
use crate::auth::links::LinkSigner;
use crate::cds_hooks::HookState;
use crate::configuration::Settings;
use crate::hl7::ingest::IngestContext;
use crate::hl7::listener::{self, ListenerOptions};
use crate::hl7::message::ParseOptions;
use crate::http::throttle::Throttle;
use crate::jobs::worker::{WorkerContext, spawn_workers};
use crate::smart::SmartState;
use crate::state::{AppState, Shutdown};
use crate::{audit, audit_api, cds_hooks, health, http, http_client, notifications, results, smart, store};

pub struct Application {
    port: u16,
    hl7_port: Option<u16>,
    server: Server,
    /// What shutdown waits for and cleans up.
    drain: Drain,
}

/// The parts of a running instance that shutdown drains, in order (see
/// [`Application::run_until_stopped`]).
struct Drain {
    shutdown: Shutdown,
    grace: Duration,
    hl7: Option<tokio::task::JoinHandle<()>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    instance: String,
    db: DatabaseConnection,
    audit: AuditLog,
    signer: Arc<CheckpointSigner>,
    checkpoint_dir: std::path::PathBuf,
}

/// Ends a running [`Application`] as SIGTERM does (tests hold one to stop an instance).
#[derive(Clone)]
pub struct ShutdownTrigger(Shutdown);

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.begin();
    }
}

impl Application {
    pub async fn build(mut settings: Settings) -> anyhow::Result<Application> {
        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))
            .with_context(|| format!("binding {}:{}", settings.server.host, settings.server.port))?;
        let port = listener.local_addr()?.port();
        settings.resolve_urls(port);
        let db = store::connect(&settings.database).await.context("connecting to the database")?;
        store::migrate(&db).await.context("migrating the database")?;
        let replay_store = match store::is_sqlite(&db) {
            true => store::connect_with(&settings.database, store::Durability::Relaxed).await.context("connecting the replay store")?,
            false => db.clone(),
        };
        let http = http_client::build();
        let gate = store::WriteGate::for_db(&db);
        let audit = AuditLog::default().with_write_gate(gate.clone()).with_queue_limit(settings.audit.max_pending);
        let wake = Arc::new(tokio::sync::Notify::new());
        let hl7 = if settings.hl7.enabled {
            let l = std::net::TcpListener::bind(settings.hl7.bind.as_str())
                .with_context(|| format!("binding the HL7 listener to {}", settings.hl7.bind))?;
            l.set_nonblocking(true)?;
            Some(tokio::net::TcpListener::from_std(l)?)
        } else {
            None
        };
        let hl7_port = hl7.as_ref().map(|l| l.local_addr()).transpose()?.map(|a| a.port());
        let keys = KeyStore::from_settings(&settings.clients, &settings.auth, http.clone()).context("loading client keys")?;
        let auditor_keys = KeyStore::from_settings(&settings.auditors, &settings.auth, http.clone()).context("loading auditor keys")?;
        let signer = CheckpointSigner::load_or_create(&settings.audit.checkpoint_key_file, &settings.audit.origin)
            .context("loading the checkpoint signing key")?;
        tracing::info!(verifier_key = %signer.verifier_key(), "audit checkpoints are signed with this key");
        // Every start records the configuration in force (as a digest) and the checkpoint key,
        // so a configuration change shows in the log as a new digest.
        let config_digest = {
            use sha2::Digest;
            let mut redacted = settings.clone();
            // The database URL may carry a password: only its scheme takes part.
            redacted.database.url = redacted.database.url.split(':').next().unwrap_or_default().to_owned();
            hex::encode(sha2::Sha256::digest(serde_json::to_vec(&redacted).context("serialising settings")?))
        };
        let start = audit::AuditEvent::new(audit::Action::SystemStart, audit::Outcome::Success)
            .entity("Software", concat!("radsight/", env!("CARGO_PKG_VERSION")))
            .detail("config_sha256", config_digest)
            .detail("checkpoint_key", signer.verifier_key())
            .detail("database", if store::is_sqlite(&db) { "sqlite" } else { "postgresql" })
            .detail("clients", settings.clients.iter().map(|c| c.iss.clone()).collect::<Vec<_>>())
            .detail("auditors", settings.auditors.iter().map(|c| c.iss.clone()).collect::<Vec<_>>());
        audit.record(&db, start).await.context("recording the start in the audit log")?;
        // Hash entries written before the Merkle log into it, then sign where the log stands.
        audit.checkpoint(&db, &signer, Some(&settings.audit.checkpoint_dir)).await.context("signing a start-up checkpoint")?;
        let links = LinkSigner::new(&signer.derive_secret("radsight/result-links/v1"), settings.analysis.link_ttl_secs);
        let demo = demo_ehr(&mut settings, &db, &audit).await?;
        let smart =
            SmartState::build(&settings, demo.iter().map(|d| d.1.clone()).collect(), http.clone()).context("setting up the SMART app")?;
        let demo = demo.map(|d| d.0);
        let hooks = HookState::build(&settings, http)?;
        let shutdown = Shutdown::default();
        let instance = format!("{}-{}", hostname(), uuid::Uuid::new_v4().simple());
        let state = AppState {
            links,
            verifier: ClientVerifier::new(keys, settings.auth.clone(), replay_store.clone(), gate.clone()),
            auditors: ClientVerifier::new(auditor_keys, settings.auth.clone(), replay_store, gate),
            checkpoint_signer: Arc::new(signer),
            audit: audit.clone(),
            wake: wake.clone(),
            db,
            settings: Arc::new(settings),
            shutdown: shutdown.clone(),
        };
        let mut hl7_task = None;
        if let Some(l) = hl7 {
            let study_uid_field = Some(state.settings.hl7.study_uid_field.as_str())
                .filter(|f| !f.is_empty())
                .map(hl7_parser::query::LocationQuery::parse)
                .transpose()
                .map_err(|_| anyhow::anyhow!("hl7.study_uid_field is not a field location"))?;
            let ctx = IngestContext {
                db: state.db.clone(),
                audit: audit.clone(),
                parse: ParseOptions { study_uid_field },
                max_attempts: state.settings.jobs.max_attempts,
                wake: wake.clone(),
                senders: crate::hl7::ingest::SenderPolicy::from_settings(&state.settings.hl7),
                settings: state.settings.clone(),
            };
            let tls = state.settings.hl7.tls.as_ref().map(crate::mllp::tls::acceptor).transpose().context("setting up MLLP over TLS")?;
            hl7_task = Some(tokio::spawn(listener::serve(l, ListenerOptions::from(&state.settings.hl7), ctx, shutdown.clone(), tls)));
        }
        // Only workers run models; an instance with none does not need the registry.
        let mut workers = Vec::new();
        let outbox_wake = Arc::new(tokio::sync::Notify::new());
        let credentials =
            crate::dicomweb::PacsCredentialStore::load(&state.settings.dicomweb.credentials).context("loading PACS credentials")?;
        if state.settings.jobs.workers > 0 {
            let analyzer = Arc::new(crate::analysis::Analyzer::open(&state.settings.analysis)?);
            workers = spawn_workers(WorkerContext {
                db: state.db.clone(),
                audit: audit.clone(),
                jobs: state.settings.jobs.clone(),
                dicomweb: state.settings.dicomweb.clone(),
                http: http_client::build(),
                credentials: credentials.clone(),
                wake,
                instance: instance.clone(),
                analyzer,
                shutdown: shutdown.clone(),
                memory: crate::jobs::memory::MemoryBudget::new(state.settings.jobs.memory_budget_mib),
                settings: state.settings.clone(),
                outbox_wake: outbox_wake.clone(),
            });
        }
        // The deliverer runs on every instance with outputs configured: deliveries queued by any
        // instance are claimed from the shared table.
        workers.extend(crate::outbox::deliver::spawn(crate::outbox::deliver::DeliveryContext {
            db: state.db.clone(),
            audit: audit.clone(),
            settings: state.settings.clone(),
            http: http_client::build(),
            credentials,
            signer: state.checkpoint_signer.clone(),
            tokens: Arc::new(crate::backend_auth::BackendTokens::new(
                http_client::build(),
                crate::keys::keyring::Keyring::open(&state.settings.outputs.keys_dir),
            )),
            wake: outbox_wake,
            owner: format!("{instance}/outbox"),
            shutdown: shutdown.clone(),
        }));
        let drain = Drain {
            shutdown: shutdown.clone(),
            grace: Duration::from_secs(state.settings.server.shutdown_grace_secs),
            hl7: hl7_task,
            workers,
            instance,
            db: state.db.clone(),
            audit,
            signer: state.checkpoint_signer.clone(),
            checkpoint_dir: state.settings.audit.checkpoint_dir.clone(),
        };
        let http_workers = state.settings.server.workers;
        let throttle = web::Data::new(Throttle::from_settings(&state.settings.limits));
        let state = web::Data::new(state);
        let (hooks, smart) = (web::Data::new(hooks), web::Data::new(smart));
        spawn_jti_purge(state.db.clone());
        spawn_checkpoints(state.clone().into_inner());
        spawn_refusal_windows(state.clone().into_inner(), throttle.clone().into_inner());
        let mut server = HttpServer::new(move || {
            // Browser-based CDS clients call cross-origin with a bearer token, never with cookies.
            // The SMART app is served by radsight itself, so its API (`/api`) answers no other
            // origin.
            let cors = Cors::default()
                .allowed_origin_fn(|_, head| !head.uri.path().starts_with("/api/"))
                .allowed_methods(["GET", "POST", "OPTIONS"])
                .allowed_headers(["authorization", "content-type"])
                .max_age(3600);
            App::new()
                // Innermost: a source over its rate is answered 429 before any token is verified.
                .wrap(middleware::from_fn(http::throttle::limit_sources))
                // No browser may guess a content type: JSON, PNGs and pages are what they say.
                .wrap(middleware::DefaultHeaders::new().add(("x-content-type-options", "nosniff")))
                .wrap(cors)
                // Logs method, path (no query string; patient ids redacted), status and latency:
                // never headers, query strings or bodies, where tokens and patient data travel.
                .wrap(
                    middleware::Logger::new("%{route}xi %s %b %Dms")
                        .custom_request_replace("route", |req| format!("{} {}", req.method(), http::access_log::loggable_path(req.path()))),
                )
                .app_data(state.clone())
                .app_data(throttle.clone())
                .app_data(hooks.clone())
                .app_data(smart.clone())
                .configure(cds_hooks::routes)
                .configure(notifications::routes)
                .configure(health::routes)
                .configure(crate::backend_auth::jwks::routes)
                .configure(audit_api::routes)
                .configure(results::api::routes)
                .configure(smart::routes)
                .configure(|cfg| mount_demo(cfg, demo.as_ref()))
                .default_service(web::to(http::error::not_found))
        })
        .client_request_timeout(Duration::from_secs(10))
        // Signals are ours (run_until_stopped): actix alone would stop HTTP but not drain MLLP,
        // the workers or the audit tally.
        .disable_signals()
        .shutdown_timeout(drain.grace.as_secs())
        .listen(listener)?;
        if http_workers > 0 {
            server = server.workers(http_workers);
        }
        Ok(Application { port, hl7_port, server: server.run(), drain })
    }

    /// A handle that stops this instance as SIGTERM would.
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger(self.drain.shutdown.clone())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port the HL7 MLLP listener is bound to, when it is enabled.
    pub fn hl7_port(&self) -> Option<u16> {
        self.hl7_port
    }

    /// Serves until SIGTERM, SIGINT or a [`ShutdownTrigger`], then drains within
    /// `server.shutdown_grace_secs`:
    /// 1. readiness turns 503, the MLLP listener and the workers stop taking new work;
    /// 2. HTTP stops accepting and in-flight requests (hook calls) finish;
    /// 3. MLLP connections finish the message under way and send its ACK;
    /// 4. workers finish the job under way; jobs still running at the deadline are handed back
    ///    to the queue;
    /// 5. the refusal tally is flushed and a checkpoint signed.
    ///
    /// Every answer already given (ACK, hook response) was durable before it was given; draining
    /// only avoids cutting work off half-way.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Application { server, drain, .. } = self;
        let handle = server.handle();
        let mut server = tokio::spawn(server);
        tokio::select! {
            r = &mut server => return r.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            _ = stop_signal() => tracing::info!("stop signal received; draining"),
            _ = drain.shutdown.begun() => tracing::info!("shutdown requested; draining"),
        }
        drain.shutdown.begin();
        let deadline = tokio::time::Instant::now() + drain.grace;
        let http = async {
            handle.stop(true).await;
            let _ = server.await;
        };
        let hl7 = async {
            if let Some(t) = drain.hl7 {
                let _ = t.await;
            }
        };
        let workers = futures_util::future::join_all(drain.workers);
        if tokio::time::timeout_at(deadline, futures_util::future::join3(http, hl7, workers)).await.is_err() {
            tracing::warn!(grace_secs = drain.grace.as_secs(), "work still under way at the end of the grace period");
        }
        match crate::jobs::worker::hand_back_jobs(&drain.db, &drain.audit, &drain.instance).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "running jobs handed back to the queue"),
            Err(e) => tracing::error!(error = ?e, "could not hand running jobs back to the queue; their leases will expire"),
        }
        if let Err(e) = drain.audit.flush_refusals(&drain.db).await {
            tracing::error!(error = ?e, "could not write the last refusal summaries");
        }
        if let Err(e) = drain.audit.checkpoint(&drain.db, &drain.signer, Some(&drain.checkpoint_dir)).await {
            tracing::error!(error = ?e, "could not sign the shutdown checkpoint");
        }
        tracing::info!("radsight stopped");
        Ok(())
    }
}

/// The demo EHR and its patient's analysed study, in builds with the `demo` feature when
/// `[smart.demo_ehr] enabled`. A build without the feature refuses that setting rather than
/// silently serving no demo.
#[cfg(feature = "demo")]
async fn demo_ehr(
    settings: &mut Settings,
    db: &DatabaseConnection,
    audit: &AuditLog,
) -> anyhow::Result<Option<(crate::demo::EhrSim, (crate::configuration::EhrSettings, Option<secrecy::SecretString>))>> {
    if !settings.smart.demo_ehr.enabled {
        return Ok(None);
    }
    let (sim, registration) = crate::demo::demo_ehr(settings);
    // Results are written back to the demo EHR's record, as radsight would to a real one.
    crate::demo::write_back_to(settings, &sim).context("registering radsight's key with the demo EHR")?;
    // The demo patient's id is the demo EHR's: its studies live in that EHR's namespace.
    let namespace = settings.namespace_of_issuer(&registration.0.iss);
    crate::demo::seed_demo(db, audit, settings, &namespace).await.context("analysing the demo EHR's phantom study")?;
    Ok(Some((sim, registration)))
}

#[cfg(not(feature = "demo"))]
async fn demo_ehr(
    settings: &mut Settings,
    _: &DatabaseConnection,
    _: &AuditLog,
) -> anyhow::Result<Option<(NoDemo, (crate::configuration::EhrSettings, Option<secrecy::SecretString>))>> {
    anyhow::ensure!(
        !settings.smart.demo_ehr.enabled,
        "smart.demo_ehr is enabled, but this build has no demo EHR (build with `--features demo`)"
    );
    Ok(None)
}

/// Stands in for the demo EHR in builds without it.
#[cfg(not(feature = "demo"))]
#[derive(Clone)]
enum NoDemo {}

#[cfg(feature = "demo")]
fn mount_demo(cfg: &mut web::ServiceConfig, demo: Option<&crate::demo::EhrSim>) {
    if let Some(sim) = demo {
        crate::demo::routes(cfg, sim);
    }
}

#[cfg(not(feature = "demo"))]
fn mount_demo(_: &mut web::ServiceConfig, _: Option<&NoDemo>) {}

/// Signs and publishes a checkpoint every `audit.checkpoint_interval_secs` when the log grew.
fn spawn_checkpoints(state: Arc<AppState>) {
    let every = state.settings.audit.checkpoint_interval_secs;
    if every == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        tick.tick().await;
        loop {
            tick.tick().await;
            let dir = &state.settings.audit.checkpoint_dir;
            if let Err(e) = state.audit.checkpoint(&state.db, &state.checkpoint_signer, Some(dir)).await {
                tracing::error!(error = ?e, "could not sign or publish an audit checkpoint");
            }
        }
    });
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Closes the refusal tally's window every `limits.refusal_window_secs` (writing its
/// `refusal.summary` entries), and forgets rate-limit state of sources and clients gone quiet.
fn spawn_refusal_windows(state: Arc<AppState>, throttle: Arc<Throttle>) {
    let every = state.settings.limits.refusal_window_secs.max(1);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = state.audit.flush_refusals(&state.db).await {
                tracing::error!(error = ?e, "could not write refusal summaries; their counts are kept for the next window");
            }
            throttle.retain_recent();
        }
    });
}

/// Names this machine in job lease owners (for `radsight jobs list`); not secret.
fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "radsight".into())
}

fn spawn_jti_purge(db: DatabaseConnection) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            if let Err(e) = purge_expired_jtis(&db).await {
                tracing::warn!(error = %e, "could not purge expired jti records");
            }
        }
    });
}
