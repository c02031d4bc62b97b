//! The worker pool: `jobs.workers` tasks that claim jobs and run their steps, auditing each.
//!
//! Steps of an `analyse-study` job today:
//! 1. `job.started` is audited when the job is claimed.
//! 2. With no DICOMweb root known (the job's allowlisted endpoint, else
//!    `dicomweb.default_endpoint`), the job ends at stage `fetch-pending`.
//! 3. **locate**: QIDO-RS `GET {root}/studies/{uid}/instances`. Audited as `dicomweb.fetch`.
//! 4. **retrieve**: WADO-RS `GET {root}/studies/{uid}` (multipart), or instance by instance
//!    when `[dicomweb.select]` rules pick some (modality, SOP class, body part, series
//!    description), capped at
//!    `dicomweb.max_study_bytes`; each part must be a DICOM Part 10 instance. Audited as
//!    `dicomweb.fetch` with the instance and byte counts. The job ends at stage `fetched`.
//!
//! A PACS that is down, answers an error or does not (yet) have the study fails the attempt,
//! which is retried with backoff; an oversize or malformed study is `dead` at once. Decoding
//! the images and running a model are later steps; nothing here pretends to analyse anything.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::sync::Notify;

use super::{Failed, claim, fail, succeed};
use crate::audit::{Action, AuditEvent, AuditLog, Outcome};
use crate::configuration::{DicomwebSettings, JobSettings};
use crate::dicomweb::{DicomwebClient, DicomwebError, PacsCredentialStore};
use crate::store::entities::job;

/// What a worker needs; cheap to clone.
#[derive(Clone)]
pub struct WorkerContext {
    pub db: DatabaseConnection,
    pub audit: AuditLog,
    pub jobs: JobSettings,
    pub dicomweb: DicomwebSettings,
    pub http: reqwest::Client,
    /// PACS credentials, read at start.
    pub credentials: PacsCredentialStore,
    /// Notified when this instance enqueues a job, so an idle worker starts at once.
    pub wake: Arc<Notify>,
    /// Names this instance in lease owners.
    pub instance: String,
}

/// A failed step: a stable code for the job row and the audit trail, and whether retrying
/// cannot help (the job then goes to `dead` at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepError {
    pub code: &'static str,
    pub permanent: bool,
}

impl From<DicomwebError> for StepError {
    fn from(e: DicomwebError) -> Self {
        StepError { code: e.code(), permanent: !e.is_transient() }
    }
}

/// Starts `ctx.jobs.workers` worker tasks.
pub fn spawn_workers(ctx: WorkerContext) {
    for n in 0..ctx.jobs.workers {
        let ctx = ctx.clone();
        tokio::spawn(async move { run_worker(ctx, n).await });
    }
}

async fn run_worker(ctx: WorkerContext, n: usize) {
    let owner = format!("{}/{n}", ctx.instance);
    let idle = Duration::from_millis(ctx.jobs.poll_interval_ms);
    loop {
        match run_once(&ctx, &owner).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "job worker could not reach the database"),
        }
        tokio::select! {
            _ = ctx.wake.notified() => {}
            _ = tokio::time::sleep(idle) => {}
        }
    }
}

/// Claims and runs one job. Ok(false) when none was due.
pub async fn run_once(ctx: &WorkerContext, owner: &str) -> anyhow::Result<bool> {
    let Some(job) = claim(&ctx.db, owner, ctx.jobs.lease_ms).await? else {
        return Ok(false);
    };
    // Claimed again after its worker was lost on its last allowed attempt: it is dead, not rerun.
    let result = if job.attempts > job.max_attempts {
        Err(StepError { code: "worker-lost", permanent: true })
    } else {
        audit(ctx, &job, Action::JobStarted, Outcome::Success, |e| e.detail("attempt", job.attempts)).await?;
        run_steps(ctx, &job).await
    };
    match result {
        Ok(stage) => {
            let mut txn = ctx.audit.begin(&ctx.db).await?;
            if succeed(txn.conn(), &job.id, owner, stage).await? {
                txn.append(event(&job, Action::JobSucceeded, Outcome::Success).detail("stage", stage).detail("attempt", job.attempts))
                    .await?;
                txn.commit().await?;
            } else {
                tracing::warn!(job = %job.id, "lease lost before the job finished; its new owner decides");
            }
        }
        Err(StepError { code, permanent }) => {
            let mut txn = ctx.audit.begin(&ctx.db).await?;
            let failed = fail(txn.conn(), &job, owner, code, permanent, ctx.jobs.backoff_base_ms, ctx.jobs.backoff_max_ms).await?;
            let next = match failed {
                Failed::RetryAt(at) => serde_json::json!({"retry_at_ms": at}),
                Failed::Dead => serde_json::json!("dead"),
                Failed::LeaseLost => serde_json::json!("lease-lost"),
            };
            txn.append(
                event(&job, Action::JobFailed, Outcome::Error)
                    .detail("reason", code)
                    .detail("attempt", job.attempts)
                    .detail("next", next),
            )
            .await?;
            txn.commit().await?;
        }
    }
    Ok(true)
}

fn event(job: &job::Model, action: Action, outcome: Outcome) -> AuditEvent {
    AuditEvent::new(action, outcome)
        .patient(job.patient_ref.clone())
        .entity("Job", job.id.clone())
        .entity("ImagingStudy", job.study_uid.clone())
}

async fn audit(
    ctx: &WorkerContext,
    job: &job::Model,
    action: Action,
    outcome: Outcome,
    add: impl FnOnce(AuditEvent) -> AuditEvent,
) -> anyhow::Result<()> {
    ctx.audit.record(&ctx.db, add(event(job, action, outcome))).await?;
    Ok(())
}

async fn run_steps(ctx: &WorkerContext, job: &job::Model) -> Result<&'static str, StepError> {
    let root = job.endpoint.clone().or_else(|| Some(ctx.dicomweb.default_endpoint.clone()).filter(|e| !e.is_empty()));
    let Some(root) = root else {
        // No PACS known for this study: it stays recorded, waiting for a fetch.
        return Ok("fetch-pending");
    };
    let client = DicomwebClient::new(
        ctx.http.clone(),
        Duration::from_millis(ctx.dicomweb.timeout_ms),
        ctx.dicomweb.max_study_bytes,
        ctx.credentials.for_root(&root).cloned(),
    );

    let found = client.find_instances(&root, &job.study_uid).await;
    audit_fetch(ctx, job, "qido-rs", found.as_ref().map(|i| serde_json::json!({"instances": i.len()}))).await?;
    let found = found.map_err(StepError::from)?;

    let retrieved = client.retrieve_selected(&root, &job.study_uid, &found, &ctx.dicomweb.select).await;
    audit_fetch(ctx, job, "wado-rs", retrieved.as_ref().map(|r| serde_json::json!({"instances": r.instances.len(), "bytes": r.bytes})))
        .await?;
    retrieved.map_err(StepError::from)?;
    // Decoding the retrieved instances is the next step (a later issue); the job ends here.
    Ok("fetched")
}

/// Audits one DICOMweb operation of a job, with its counts or its error code.
async fn audit_fetch(
    ctx: &WorkerContext,
    job: &job::Model,
    operation: &str,
    result: Result<serde_json::Value, &DicomwebError>,
) -> Result<(), StepError> {
    let outcome = if result.is_ok() { Outcome::Success } else { Outcome::Error };
    audit(ctx, job, Action::DicomwebFetch, outcome, |e| {
        let e = e.detail("operation", operation);
        match result {
            Ok(counts) => e.detail("result", counts),
            Err(err) => e.detail("reason", err.code()),
        }
    })
    .await
    .map_err(|_| StepError { code: "audit-unavailable", permanent: false })
}
