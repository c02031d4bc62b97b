//! The audit trail: an append-only, hash-chained table of everything radsight is asked and does.
//!
//! **Invariant:** only this module writes `audit_entries`, and only by appending. Each entry
//! carries the SHA-256 of its predecessor, so changing, deleting or reordering any row breaks the
//! chain at that row ([`verify::verify_log`]). Appends are serialised (an in-process lock, plus
//! `BEGIN IMMEDIATE` on SQLite and a transaction-scoped advisory lock on PostgreSQL), so the
//! sequence has one total order and no gaps across threads and instances.
//!
//! **Invariant:** an entry is committed before the response it records is sent: callers await
//! [`AuditLog::record`] (or commit an [`AuditTxn`]) before they answer.
//!
//! No free text, token or key ever goes into an entry; patients appear only as references.

pub mod checkpoint;
pub mod export;
pub mod merkle;
pub mod proof;
pub mod tally;
pub mod tree;
pub mod verify;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryOrder, QuerySelect,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, MutexGuard, oneshot};

use crate::store::entities::{audit_checkpoint, audit_entry};

/// Bumped whenever the canonical form changes; old entries keep verifying under their version.
pub const FORMAT_VERSION: i32 = 1;
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Arbitrary constant naming radsight's chain lock among PostgreSQL advisory locks.
const PG_CHAIN_LOCK: i64 = 0x7261_6473_6967_6874; // "radsight"

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Action {
    #[serde(rename = "cds.discovery")]
    Discovery,
    #[serde(rename = "cds.hook")]
    HookCall,
    #[serde(rename = "cds.feedback")]
    Feedback,
    #[serde(rename = "auth.reject")]
    AuthReject,
    #[serde(rename = "fhir.read")]
    FhirRead,
    #[serde(rename = "audit.read")]
    AuditRead,
    #[serde(rename = "audit.export")]
    AuditExport,
    #[serde(rename = "system.start")]
    SystemStart,
    #[serde(rename = "hl7.message")]
    Hl7Message,
    #[serde(rename = "fhir.notification")]
    FhirNotification,
    #[serde(rename = "job.queued")]
    JobQueued,
    #[serde(rename = "job.started")]
    JobStarted,
    #[serde(rename = "job.succeeded")]
    JobSucceeded,
    #[serde(rename = "job.failed")]
    JobFailed,
    #[serde(rename = "job.retried")]
    JobRetried,
    #[serde(rename = "dicomweb.fetch")]
    DicomwebFetch,
    /// Pixel decoding of a retrieved instance (or its failure, with the reason code).
    #[serde(rename = "dicom.decode")]
    DicomDecode,
    /// A model ran on an image and its result was stored.
    #[serde(rename = "model.inference")]
    ModelInference,
    /// A model was refused at load (weights that do not match their card).
    #[serde(rename = "model.refused")]
    ModelRefused,
    /// `radsight analyze` on local files.
    #[serde(rename = "analyze.run")]
    AnalyzeRun,
    /// A read of patient data: a result, its pictures or its trail (SMART app, result links).
    #[serde(rename = "patient.read")]
    PatientRead,
    /// A clinician's verdict on a result, from the SMART app.
    #[serde(rename = "result.feedback")]
    ResultFeedback,
    /// A SMART launch: started, completed or refused.
    #[serde(rename = "smart.launch")]
    SmartLaunch,
    /// A message named a study that already belongs to another patient: refused, nothing queued.
    #[serde(rename = "identity.conflict")]
    IdentityConflict,
    /// Refusals before authentication counted in one window beyond the first of their key
    /// (see [`tally`]): channel, source, reason and count.
    #[serde(rename = "refusal.summary")]
    RefusalSummary,
    /// A request answered 429 by a rate limit.
    #[serde(rename = "http.throttled")]
    Throttled,
    /// One attempt to deliver a result to another system (the PACS by STOW-RS), and its outcome.
    #[serde(rename = "output.delivery")]
    OutputDelivery,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Discovery => "cds.discovery",
            Action::HookCall => "cds.hook",
            Action::Feedback => "cds.feedback",
            Action::AuthReject => "auth.reject",
            Action::FhirRead => "fhir.read",
            Action::AuditRead => "audit.read",
            Action::AuditExport => "audit.export",
            Action::SystemStart => "system.start",
            Action::Hl7Message => "hl7.message",
            Action::FhirNotification => "fhir.notification",
            Action::JobQueued => "job.queued",
            Action::JobStarted => "job.started",
            Action::JobSucceeded => "job.succeeded",
            Action::JobFailed => "job.failed",
            Action::JobRetried => "job.retried",
            Action::DicomwebFetch => "dicomweb.fetch",
            Action::DicomDecode => "dicom.decode",
            Action::ModelInference => "model.inference",
            Action::ModelRefused => "model.refused",
            Action::AnalyzeRun => "analyze.run",
            Action::PatientRead => "patient.read",
            Action::ResultFeedback => "result.feedback",
            Action::SmartLaunch => "smart.launch",
            Action::IdentityConflict => "identity.conflict",
            Action::RefusalSummary => "refusal.summary",
            Action::Throttled => "http.throttled",
            Action::OutputDelivery => "output.delivery",
        }
    }
}

/// The most bytes of a text that a stranger chose (a claimed issuer, an HL7 sender) that an
/// entry keeps; a longer text is cut and its SHA-256 kept, so strangers cannot grow the
/// permanent log at will and an auditor can still match the full text.
pub const MAX_STRANGER_TEXT: usize = 256;

/// `text` as an entry may hold it: whole when short, else its first [`MAX_STRANGER_TEXT`]
/// bytes (on a character boundary), `…`, and `sha256:` with the hash of the whole text.
pub fn bounded(text: &str) -> String {
    if text.len() <= MAX_STRANGER_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_STRANGER_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    use sha2::Digest;
    format!("{}…sha256:{}", &text[..end], hex::encode(sha2::Sha256::digest(text.as_bytes())))
}

/// How it ended; maps onto FHIR AuditEvent.outcome (0, 4, 8, 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    /// The client's request was refused (bad input, unknown card, unregistered server).
    Rejected,
    /// Authentication failed.
    Denied,
    /// radsight or an upstream system failed.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Rejected => "rejected",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

/// Something an entry is about, by reference only (`Card/uuid`, `ServiceRequest/id`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entity {
    pub kind: &'static str,
    pub id: String,
}

/// An event to append. `detail` is a small JSON object of coded facts, never free text.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub action: Action,
    pub outcome: Outcome,
    pub actor_iss: Option<String>,
    pub actor_user: Option<String>,
    pub patient_ref: Option<String>,
    pub entities: Vec<Entity>,
    pub detail: serde_json::Value,
}

impl AuditEvent {
    pub fn new(action: Action, outcome: Outcome) -> AuditEvent {
        AuditEvent {
            action,
            outcome,
            actor_iss: None,
            actor_user: None,
            patient_ref: None,
            entities: Vec::new(),
            detail: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn actor(mut self, iss: Option<&str>, user: Option<&str>) -> Self {
        self.actor_iss = iss.map(str::to_owned);
        self.actor_user = user.map(str::to_owned);
        self
    }

    pub fn patient(mut self, reference: Option<String>) -> Self {
        self.patient_ref = reference;
        self
    }

    pub fn entity(mut self, kind: &'static str, id: impl Into<String>) -> Self {
        self.entities.push(Entity { kind, id: id.into() });
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        if let serde_json::Value::Object(m) = &mut self.detail {
            m.insert(key.to_owned(), value.into());
        }
        self
    }
}

/// The canonical bytes of a stored entry: its Merkle leaf is SHA-256(0x00 ‖ these bytes).
pub fn canonical_bytes(entry: &audit_entry::Model) -> Vec<u8> {
    Canonical::of(entry).bytes()
}

/// The canonical form that is hashed: a fixed field order, versioned, every stored column in it.
#[derive(Serialize)]
pub(crate) struct Canonical<'a> {
    pub v: i32,
    pub seq: i64,
    pub recorded_at: &'a str,
    pub action: &'a str,
    pub outcome: &'a str,
    pub actor_iss: Option<&'a str>,
    pub actor_user: Option<&'a str>,
    pub patient_ref: Option<&'a str>,
    pub entities: &'a str,
    pub detail: &'a str,
    pub prev_hash: &'a str,
}

impl Canonical<'_> {
    pub(crate) fn of(m: &audit_entry::Model) -> Canonical<'_> {
        Canonical {
            v: m.format_version,
            seq: m.seq,
            recorded_at: &m.recorded_at,
            action: &m.action,
            outcome: &m.outcome,
            actor_iss: m.actor_iss.as_deref(),
            actor_user: m.actor_user.as_deref(),
            patient_ref: m.patient_ref.as_deref(),
            entities: &m.entities,
            detail: &m.detail,
            prev_hash: &m.prev_hash,
        }
    }

    /// The bytes that are hashed: into the chain (`entry_hash`) and as the Merkle leaf.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        self.write_into(&mut out);
        out
    }

    /// [`Self::bytes`] appended to `out`, so a caller hashing many entries reuses one buffer.
    pub(crate) fn write_into(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("canonical audit form always serialises")
    }

    /// The chain hash alone (the writer and the verifier hash the bytes they already have).
    #[cfg(test)]
    pub(crate) fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.bytes()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("could not append an audit entry")]
    Append(#[source] DbErr),
    #[error("the audit tree is inconsistent")]
    Tree(#[source] tree::TreeError),
    #[error("could not publish the checkpoint outside the database")]
    Publish(#[source] std::io::Error),
    #[error("the group commit holding this entry failed: {0}")]
    Group(String),
    #[error("could not store the records that go with the audit entries")]
    Records(#[from] DbErr),
    /// The group commit's queue is full: the write was not queued; try again shortly.
    #[error("the audit log has too many writes waiting")]
    Busy,
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).expect("UTC timestamps always format")
}

/// Where the log stood after this process's last commit, so the next append need not read the
/// tree's right edge back. Trusted only while the newest stored entry is still this head (another
/// instance or a CLI command may have appended since).
#[derive(Clone)]
struct ChainState {
    head: (i64, String),
    frontier: Vec<(merkle::NodeId, merkle::Hash)>,
}

/// Rows that must commit together with an audit entry, such as the cards a hook served.
pub trait AttachedRows: Send + 'static {
    /// Writes the rows inside the entry's transaction; `seq` is the entry's sequence number.
    fn write<'t>(self: Box<Self>, conn: &'t DatabaseTransaction, seq: i64) -> BoxFuture<'t, Result<(), DbErr>>;
}

/// Work that reads and writes in a group commit and appends its own entries as it goes, such
/// as an HL7 message (look up its control id, store its order and study, queue its job, append
/// its entries). It runs in its own savepoint, so its failure undoes only its own writes and
/// entries; its output reaches the caller only after the group has committed.
pub trait GroupWork: Send + 'static {
    type Output: Send + 'static;
    fn run<'t>(self: Box<Self>, w: &'t mut GroupWriter<'_>) -> BoxFuture<'t, Result<Self::Output, AuditError>>;
}

/// A [`GroupWork`]'s view of the group's transaction: its reads and writes, and its appends.
pub struct GroupWriter<'t> {
    conn: &'t DatabaseTransaction,
    head: &'t mut (i64, String),
    frontier: &'t mut Vec<(merkle::NodeId, merkle::Hash)>,
}

impl GroupWriter<'_> {
    pub fn conn(&self) -> &DatabaseTransaction {
        self.conn
    }

    /// Appends an entry; durable when the group commits.
    pub async fn append(&mut self, event: AuditEvent) -> Result<i64, AuditError> {
        append_to(self.conn, self.head, self.frontier, event).await
    }

    /// The `entry_hash` of the entry appended last.
    pub fn last_entry_hash(&self) -> &str {
        &self.head.1
    }
}

/// A [`GroupWork`] with its output type erased, to wait in the queue beside plain entries.
trait QueuedWork: Send {
    fn run<'t>(self: Box<Self>, w: &'t mut GroupWriter<'_>) -> BoxFuture<'t, Result<Box<dyn std::any::Any + Send>, AuditError>>;
}

impl<W: GroupWork> QueuedWork for W {
    fn run<'t>(self: Box<Self>, w: &'t mut GroupWriter<'_>) -> BoxFuture<'t, Result<Box<dyn std::any::Any + Send>, AuditError>> {
        Box::pin(async move { GroupWork::run(self, w).await.map(|out| Box::new(out) as Box<dyn std::any::Any + Send>) })
    }
}

/// One entry with the rows that commit with it: what [`AuditLog::record_with`] queues.
struct AppendEntry {
    event: AuditEvent,
    rows: Option<Box<dyn AttachedRows>>,
}

impl GroupWork for AppendEntry {
    type Output = i64;
    fn run<'t>(self: Box<Self>, w: &'t mut GroupWriter<'_>) -> BoxFuture<'t, Result<i64, AuditError>> {
        Box::pin(async move {
            let seq = w.append(self.event).await?;
            if let Some(rows) = self.rows {
                rows.write(w.conn, seq).await?;
            }
            Ok(seq)
        })
    }
}

/// Work waiting for the next group commit.
struct Pending {
    work: Box<dyn QueuedWork>,
    done: oneshot::Sender<Result<Box<dyn std::any::Any + Send>, AuditError>>,
}

/// The handle every writer of audit entries goes through.
///
/// Appends made with [`AuditLog::record`] and [`AuditLog::record_with`], and work run with
/// [`AuditLog::run_in_group`], are committed in groups: each caller queues its item and waits
/// for the chain lock; whoever gets the lock with its item still queued commits every queued
/// item in one transaction (one durable write for the group), each in its own savepoint so that
/// one failure fails only its own caller. Nobody is answered before the transaction holding its
/// item has committed.
#[derive(Clone)]
pub struct AuditLog {
    chain: Arc<Mutex<Option<ChainState>>>,
    queue: Arc<std::sync::Mutex<Vec<Pending>>>,
    /// Items waiting beyond which a new one is refused with [`AuditError::Busy`].
    max_pending: usize,
    gate: crate::store::WriteGate,
    /// Refusals before authentication counted in the open window.
    refusals: Arc<tally::RefusalTally>,
}

impl Default for AuditLog {
    fn default() -> AuditLog {
        AuditLog {
            chain: Arc::default(),
            queue: Arc::default(),
            max_pending: usize::MAX,
            gate: crate::store::WriteGate::default(),
            refusals: Arc::default(),
        }
    }
}

impl AuditLog {
    /// An audit log that refuses an offered write at once ([`AuditError::Busy`], counted as a
    /// `write-queue-full` refusal of `channel` `audit`) while `max_pending` items wait. Only
    /// writes made for a sender who can be told to try again are offered ([`Self::offer_with`],
    /// [`Self::offer_in_group`]); radsight's own bookkeeping (job steps, refusal summaries,
    /// start and stop) is always queued.
    pub fn with_queue_limit(mut self, max_pending: usize) -> AuditLog {
        self.max_pending = max_pending.max(1);
        self
    }

    /// Starts a write transaction that holds the chain lock. Other writes that must commit
    /// atomically with the entry (served cards, feedback) go through [`AuditTxn::conn`].
    pub async fn begin<'a>(&'a self, db: &DatabaseConnection) -> Result<AuditTxn<'a>, AuditError> {
        let guard = self.chain.lock().await;
        self.open(guard, db).await
    }

    /// An audit log whose transactions also hold `gate` (see [`crate::store::WriteGate`]).
    pub fn with_write_gate(mut self, gate: crate::store::WriteGate) -> AuditLog {
        self.gate = gate;
        self
    }

    async fn open<'a>(&self, guard: MutexGuard<'a, Option<ChainState>>, db: &DatabaseConnection) -> Result<AuditTxn<'a>, AuditError> {
        let gate = self.gate.enter().await;
        let txn = db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
            .map_err(AuditError::Append)?;
        if txn.get_database_backend() == DbBackend::Postgres {
            txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({PG_CHAIN_LOCK})")).await.map_err(AuditError::Append)?;
        }
        let last =
            audit_entry::Entity::find().order_by_desc(audit_entry::Column::Seq).limit(1).one(&txn).await.map_err(AuditError::Append)?;
        let head = last.map(|m| (m.seq, m.entry_hash)).unwrap_or((0, GENESIS_HASH.to_owned()));
        let frontier = match guard.as_ref() {
            Some(state) if state.head == head => state.frontier.clone(),
            _ => {
                // Entries from before the Merkle log are hashed in first: tree size == entries.
                tree::catch_up(&txn, head.0 as u64).await.map_err(AuditError::Tree)?;
                tree::load_frontier(&txn, head.0 as u64).await.map_err(AuditError::Tree)?
            }
        };
        Ok(AuditTxn { guard, _gate: gate, txn, head, frontier })
    }

    /// Audits a refusal before authentication (a stranger's): in full when it is the first of
    /// its channel, source and reason in the open window, else only counted (see [`tally`]).
    pub async fn record_refusal(
        &self,
        db: &DatabaseConnection,
        channel: &'static str,
        source: std::net::IpAddr,
        reason: &'static str,
        event: AuditEvent,
    ) -> Result<(), AuditError> {
        match self.refusals.note(channel, source, reason) {
            tally::Seen::First => self.record(db, event.detail("source", tally::source_key(source))).await.map(|_| ()),
            tally::Seen::Counted => Ok(()),
        }
    }

    /// Writes the open window's `refusal.summary` entries and opens a new window.
    pub async fn flush_refusals(&self, db: &DatabaseConnection) -> Result<usize, AuditError> {
        self.refusals.flush(db, self).await
    }

    /// Signs a checkpoint of the current tree (or reuses the one already signed at this size),
    /// stores it, and publishes it to `dir`. Returns its size and note; `None` for an empty log.
    pub async fn checkpoint(
        &self,
        db: &DatabaseConnection,
        signer: &checkpoint::CheckpointSigner,
        dir: Option<&std::path::Path>,
    ) -> Result<Option<(u64, String)>, AuditError> {
        let txn = self.begin(db).await?;
        let size = txn.tree_size();
        if size == 0 {
            return Ok(None);
        }
        let existing = audit_checkpoint::Entity::find_by_id(size as i64).one(txn.conn()).await.map_err(AuditError::Append)?;
        let note = match existing {
            Some(c) => c.note,
            None => {
                let root = txn.root();
                let note = signer.sign(size, &root);
                let row = audit_checkpoint::ActiveModel {
                    tree_size: Set(size as i64),
                    root_hash: Set(tree::to_hex(&root)),
                    note: Set(note.clone()),
                    created_at: Set(now_rfc3339()),
                };
                audit_checkpoint::Entity::insert(row).exec_without_returning(txn.conn()).await.map_err(AuditError::Append)?;
                note
            }
        };
        txn.commit().await?;
        if let Some(dir) = dir {
            checkpoint::publish(dir, size, &note).map_err(AuditError::Publish)?;
        }
        Ok(Some((size, note)))
    }

    /// Appends one entry and returns its sequence number once it is durably committed.
    pub async fn record(&self, db: &DatabaseConnection, event: AuditEvent) -> Result<i64, AuditError> {
        self.record_with(db, event, None).await
    }

    /// Appends one entry, with rows that must commit in the same transaction, and returns its
    /// sequence number once both are durably committed (group commit; see [`AuditLog`]).
    pub async fn record_with(
        &self,
        db: &DatabaseConnection,
        event: AuditEvent,
        rows: Option<Box<dyn AttachedRows>>,
    ) -> Result<i64, AuditError> {
        self.run_in_group(db, AppendEntry { event, rows }).await
    }

    /// [`Self::record_with`] for a sender who can be told to try again: refused at once with
    /// [`AuditError::Busy`] while `max_pending` items wait (see [`Self::with_queue_limit`]).
    pub async fn offer_with(
        &self,
        db: &DatabaseConnection,
        event: AuditEvent,
        rows: Option<Box<dyn AttachedRows>>,
    ) -> Result<i64, AuditError> {
        self.offer_in_group(db, AppendEntry { event, rows }).await
    }

    /// Runs `work` in the next group commit and returns its output once the group is durably
    /// committed. A failure of `work` undoes its writes and entries only.
    pub async fn run_in_group<W: GroupWork>(&self, db: &DatabaseConnection, work: W) -> Result<W::Output, AuditError> {
        let out = self.in_next_group(db, Box::new(work), false).await?;
        Ok(*out.downcast::<W::Output>().expect("work is answered with its own output"))
    }

    /// [`Self::run_in_group`] for a sender who can be told to try again: refused at once with
    /// [`AuditError::Busy`] while `max_pending` items wait.
    pub async fn offer_in_group<W: GroupWork>(&self, db: &DatabaseConnection, work: W) -> Result<W::Output, AuditError> {
        let out = self.in_next_group(db, Box::new(work), true).await?;
        Ok(*out.downcast::<W::Output>().expect("work is answered with its own output"))
    }

    async fn in_next_group(
        &self,
        db: &DatabaseConnection,
        work: Box<dyn QueuedWork>,
        bounded: bool,
    ) -> Result<Box<dyn std::any::Any + Send>, AuditError> {
        let (done, mut result) = oneshot::channel();
        {
            let mut queue = self.queue.lock().expect("audit queue lock");
            if bounded && queue.len() >= self.max_pending {
                // An item whose caller is gone (its request was cancelled while it waited for the
                // lock) answers nobody: it must not hold a place that no holder will free.
                queue.retain(|p| !p.done.is_closed());
            }
            if bounded && queue.len() >= self.max_pending {
                drop(queue);
                self.refusals.count_only("audit", "write-queue-full");
                return Err(AuditError::Busy);
            }
            queue.push(Pending { work, done });
        }
        let guard = self.chain.lock().await;
        if let Ok(outcome) = result.try_recv() {
            return outcome; // an earlier holder of the lock committed it with its group
        }
        let batch = std::mem::take(&mut *self.queue.lock().expect("audit queue lock"));
        if !batch.is_empty() {
            self.commit_group(guard, db, batch).await;
        } else {
            drop(guard);
        }
        result.await.unwrap_or(Err(AuditError::Group("the committing task was cancelled".into())))
    }

    async fn commit_group(&self, guard: MutexGuard<'_, Option<ChainState>>, db: &DatabaseConnection, batch: Vec<Pending>) {
        let mut txn = match self.open(guard, db).await {
            Ok(t) => t,
            Err(e) => {
                let why = e.to_string();
                batch.into_iter().for_each(|p| drop(p.done.send(Err(AuditError::Group(why.clone())))));
                return;
            }
        };
        let isolate = batch.len() > 1;
        let mut outcomes = Vec::with_capacity(batch.len());
        for p in batch {
            let outcome = if isolate { txn.run_isolated(p.work).await } else { txn.run(p.work).await };
            outcomes.push((p.done, outcome));
        }
        if !isolate && outcomes.iter().any(|(_, outcome)| outcome.is_err()) {
            // Alone in its group and without a savepoint: nothing of it may commit. Dropping
            // the transaction rolls it back and leaves the chain state as it was.
            drop(txn);
            outcomes.into_iter().for_each(|(done, outcome)| drop(done.send(outcome)));
            return;
        }
        // Answer only after the commit, and while still holding the lock.
        let (committed, guard) = txn.finish().await;
        for (done, outcome) in outcomes {
            let answer = match &committed {
                Ok(()) => outcome,
                Err(e) => Err(AuditError::Group(e.to_string())),
            };
            let _ = done.send(answer);
        }
        drop(guard);
    }
}

pub struct AuditTxn<'a> {
    guard: MutexGuard<'a, Option<ChainState>>,
    txn: DatabaseTransaction,
    head: (i64, String),
    /// The right edge of the Merkle tree, to hash new leaves in without reading back.
    frontier: Vec<(merkle::NodeId, merkle::Hash)>,
    /// The SQLite write gate; declared last so that it is released after the transaction ends.
    _gate: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl AuditTxn<'_> {
    pub fn conn(&self) -> &DatabaseTransaction {
        &self.txn
    }

    /// Appends an entry after the current head; visible to others only after [`Self::commit`].
    pub async fn append(&mut self, event: AuditEvent) -> Result<i64, AuditError> {
        append_to(&self.txn, &mut self.head, &mut self.frontier, event).await
    }

    /// Appends an entry and writes its attached rows in this transaction.
    pub async fn append_with(&mut self, event: AuditEvent, rows: Option<Box<dyn AttachedRows>>) -> Result<i64, AuditError> {
        let seq = self.append(event).await?;
        if let Some(rows) = rows {
            rows.write(&self.txn, seq).await.map_err(AuditError::Append)?;
        }
        Ok(seq)
    }

    /// Runs a piece of work directly in the transaction (it is alone in its group).
    async fn run(&mut self, work: Box<dyn QueuedWork>) -> Result<Box<dyn std::any::Any + Send>, AuditError> {
        let mut writer = GroupWriter { conn: &self.txn, head: &mut self.head, frontier: &mut self.frontier };
        work.run(&mut writer).await
    }

    /// Runs a piece of work inside a savepoint: on failure its writes and entries are undone
    /// and the head restored, and the rest of the group carries on.
    async fn run_isolated(&mut self, work: Box<dyn QueuedWork>) -> Result<Box<dyn std::any::Any + Send>, AuditError> {
        let saved = (self.head.clone(), self.frontier.clone());
        let savepoint = self.txn.begin().await.map_err(AuditError::Append)?;
        let attempt = {
            let mut writer = GroupWriter { conn: &savepoint, head: &mut self.head, frontier: &mut self.frontier };
            work.run(&mut writer).await
        };
        match attempt {
            Ok(out) => {
                savepoint.commit().await.map_err(AuditError::Append)?;
                Ok(out)
            }
            Err(e) => {
                let _ = savepoint.rollback().await;
                (self.head, self.frontier) = saved;
                Err(e)
            }
        }
    }

    /// The number of entries, including those appended in this transaction.
    pub fn tree_size(&self) -> u64 {
        self.head.0 as u64
    }

    /// The Merkle root over all entries, including those appended in this transaction.
    pub fn root(&self) -> merkle::Hash {
        merkle::frontier_root(&self.frontier)
    }

    pub async fn commit(self) -> Result<(), AuditError> {
        self.finish().await.0
    }

    /// Commits, and hands back the chain lock so the caller can answer before releasing it.
    async fn finish<'a>(self) -> (Result<(), AuditError>, MutexGuard<'a, Option<ChainState>>)
    where
        Self: 'a,
    {
        let AuditTxn { mut guard, _gate, txn, head, frontier } = self;
        match txn.commit().await {
            Ok(()) => {
                *guard = Some(ChainState { head, frontier });
                (Ok(()), guard)
            }
            Err(e) => (Err(AuditError::Append(e)), guard),
        }
    }
}

/// Inserts the entry after `head` on `conn`, with the Merkle nodes it completes.
async fn append_to<C: ConnectionTrait>(
    conn: &C,
    head: &mut (i64, String),
    frontier: &mut Vec<(merkle::NodeId, merkle::Hash)>,
    event: AuditEvent,
) -> Result<i64, AuditError> {
    let recorded_at = now_rfc3339();
    let model = audit_entry::Model {
        seq: head.0 + 1,
        format_version: FORMAT_VERSION,
        recorded_at,
        action: event.action.as_str().to_owned(),
        outcome: event.outcome.as_str().to_owned(),
        actor_iss: event.actor_iss,
        actor_user: event.actor_user,
        patient_ref: event.patient_ref,
        entities: serde_json::to_string(&event.entities).expect("entities serialise"),
        detail: event.detail.to_string(),
        prev_hash: head.1.clone(),
        entry_hash: String::new(),
    };
    let canonical = Canonical::of(&model).bytes();
    let entry_hash = tree::HexHash::of(&Sha256::digest(&canonical).into()).as_str().to_owned();
    let leaf = merkle::leaf_hash(&canonical);
    let seq = model.seq;
    let active = audit_entry::ActiveModel {
        seq: Set(model.seq),
        format_version: Set(model.format_version),
        recorded_at: Set(model.recorded_at),
        action: Set(model.action),
        outcome: Set(model.outcome),
        actor_iss: Set(model.actor_iss),
        actor_user: Set(model.actor_user),
        patient_ref: Set(model.patient_ref),
        entities: Set(model.entities),
        detail: Set(model.detail),
        prev_hash: Set(model.prev_hash),
        entry_hash: Set(entry_hash.clone()),
    };
    audit_entry::Entity::insert(active).exec_without_returning(conn).await.map_err(AuditError::Append)?;
    let nodes = merkle::push_leaf(frontier, (seq - 1) as u64, leaf);
    tree::insert_nodes(conn, &nodes).await.map_err(AuditError::Append)?;
    *head = (seq, entry_hash);
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strangers_long_text_is_cut_with_the_hash_of_the_whole() {
        assert_eq!(bounded("https://ehr.example.org"), "https://ehr.example.org");
        let long = "é".repeat(40_000);
        let cut = bounded(&long);
        use sha2::Digest;
        let hash = hex::encode(sha2::Sha256::digest(long.as_bytes()));
        assert!(cut.ends_with(&format!("…sha256:{hash}")), "{cut}");
        assert!(cut.len() <= MAX_STRANGER_TEXT + "…sha256:".len() + 64);
        assert!(cut.starts_with("éé"), "cut on a character boundary");
    }
}
