//! Database access: connecting to SQLite (embedded default) or PostgreSQL, migrations, and the
//! sea-orm entities. Handlers go through the functions of the owning module (`audit::`,
//! `cds_hooks::`), never through raw tables.

pub mod entities;
pub mod queue;
pub mod served_cards;
pub mod status;

pub use status::{JobStage, JobState, ResultStatus};

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr};

use crate::configuration::DatabaseSettings;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not create the database directory {path}")]
    CreateDirectory { path: String, source: std::io::Error },
    #[error("could not connect to the database")]
    Connect(#[source] DbErr),
    #[error("could not run migrations")]
    Migrate(#[source] DbErr),
}

/// Connects with the pool and per-backend settings radsight relies on: every commit durable.
pub async fn connect(settings: &DatabaseSettings) -> Result<DatabaseConnection, StoreError> {
    connect_with(settings, Durability::Full).await
}

/// Whether a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The commit survives power loss (SQLite `synchronous=FULL`). Audit entries, cards, feedback.
    Full,
    /// The commit survives a crash of radsight but may be lost with the machine's power
    /// (SQLite `synchronous=NORMAL` in WAL mode). Only for data whose loss is harmless: the
    /// JWT replay guard, where it reopens a window no longer than a token's lifetime.
    Relaxed,
}

pub async fn connect_with(settings: &DatabaseSettings, durability: Durability) -> Result<DatabaseConnection, StoreError> {
    let url = settings.url.clone();
    if let Some(path) = sqlite_file(&url)
        && let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDirectory { path: dir.display().to_string(), source })?;
    }
    let mut opts = ConnectOptions::new(url);
    opts.max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(move |o| {
            // WAL lets readers run beside the writer; synchronous=FULL makes every commit
            // durable before it returns, which the audit trail's contract requires.
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(match durability {
                    Durability::Full => sea_orm::sqlx::sqlite::SqliteSynchronous::Full,
                    Durability::Relaxed => sea_orm::sqlx::sqlite::SqliteSynchronous::Normal,
                })
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    Database::connect(opts).await.map_err(StoreError::Connect)
}

pub async fn migrate(db: &DatabaseConnection) -> Result<(), StoreError> {
    Migrator::up(db, None).await.map_err(StoreError::Migrate)
}

fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then_some(path)
}

pub fn is_sqlite(db: &DatabaseConnection) -> bool {
    db.get_database_backend() == DbBackend::Sqlite
}

/// Serialises writers inside this process on SQLite, where a second writer would otherwise wait
/// in SQLite's busy handler, which sleeps in growing steps (1 to 100 ms) instead of waking when
/// the lock frees. Waiting on an async lock instead keeps the tail latency down. PostgreSQL
/// needs no gate: its writers wait on row and advisory locks that wake them at once.
#[derive(Clone, Default)]
pub struct WriteGate(Option<std::sync::Arc<tokio::sync::Mutex<()>>>);

impl WriteGate {
    pub fn for_db(db: &DatabaseConnection) -> WriteGate {
        WriteGate(is_sqlite(db).then(Default::default))
    }

    /// Holds the gate until the returned guard is dropped (no-op on PostgreSQL).
    pub async fn enter(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.0 {
            Some(m) => Some(m.clone().lock_owned().await),
            None => None,
        }
    }
}

/// Unix time in milliseconds, as the queues store it.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The wait before attempt `attempts + 1`, after `attempts` failures: base · 2^(attempts-1),
/// capped at `max`. The job queue and the outbox retry alike.
pub fn backoff_ms(attempts: i32, base: u64, max: u64) -> u64 {
    let exp = (attempts.max(1) - 1).min(30) as u32;
    base.saturating_mul(1u64 << exp).min(max)
}
