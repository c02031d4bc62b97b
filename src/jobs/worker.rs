//! The worker pool: `jobs.workers` tasks that claim jobs and run their steps, auditing each.
//!
//! Steps of an `analyse-study` job today:
//! 1. `job.started` is audited when the job is claimed.
//! 2. **locate** (only when a DICOMweb root is known: the job's allowlisted endpoint, else
//!    `dicomweb.default_endpoint`): a QIDO-RS `GET {root}/studies?StudyInstanceUID=...`. A PACS
//!    that is down, answers an error, or does not (yet) have the study fails the attempt, which
//!    is retried with backoff. Audited as `dicomweb.fetch`.
//! 3. **fetch-pending**: the job ends at stage `fetch-pending` (`job.succeeded`). Retrieving
//!    and decoding the images (WADO-RS) and running a model are later steps; nothing here
//!    pretends to analyse anything.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::sync::Notify;

use super::{Failed, claim, fail, succeed};
use crate::audit::{Action, AuditEvent, AuditLog, Outcome};
use crate::configuration::{DicomwebSettings, JobSettings};
use crate::store::entities::job;

/// What a worker needs; cheap to clone.
#[derive(Clone)]
pub struct WorkerContext {
    pub db: DatabaseConnection,
    pub audit: AuditLog,
    pub jobs: JobSettings,
    pub dicomweb: DicomwebSettings,
    pub http: reqwest::Client,
    /// Notified when this instance enqueues a job, so an idle worker starts at once.
    pub wake: Arc<Notify>,
    /// Names this instance in lease owners.
    pub instance: String,
}

/// A failed step: a stable code for the job row and the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepError(pub &'static str);

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
        Err(StepError("worker-lost"))
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
        Err(StepError(code)) => {
            let mut txn = ctx.audit.begin(&ctx.db).await?;
            let failed = fail(txn.conn(), &job, owner, code, ctx.jobs.backoff_base_ms, ctx.jobs.backoff_max_ms).await?;
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
    if let Some(root) = root {
        let result = locate_study(ctx, &root, &job.study_uid).await;
        let (outcome, reason) = match result {
            Ok(()) => (Outcome::Success, None),
            Err(StepError(code)) => (Outcome::Error, Some(code)),
        };
        audit(ctx, job, Action::DicomwebFetch, outcome, |e| {
            let e = e.detail("operation", "qido-rs-study");
            match reason {
                Some(r) => e.detail("reason", r),
                None => e,
            }
        })
        .await
        .map_err(|_| StepError("audit-unavailable"))?;
        result?;
    }
    Ok("fetch-pending")
}

/// QIDO-RS: does the PACS at `root` hold the study?
async fn locate_study(ctx: &WorkerContext, root: &str, study_uid: &str) -> Result<(), StepError> {
    let url = url::Url::parse_with_params(&format!("{}/studies", root.trim_end_matches('/')), [("StudyInstanceUID", study_uid)])
        .map_err(|_| StepError("endpoint-not-a-url"))?;
    let resp = ctx
        .http
        .get(url)
        .header("accept", "application/dicom+json")
        .timeout(Duration::from_millis(ctx.dicomweb.timeout_ms))
        .send()
        .await
        .map_err(|_| StepError("pacs-unreachable"))?;
    match resp.status().as_u16() {
        200 => {}
        204 => return Err(StepError("study-not-found")),
        _ => return Err(StepError("pacs-error-status")),
    }
    let body = crate::http_client::read_limited(resp, 1024 * 1024).await.map_err(|_| StepError("pacs-response-unreadable"))?;
    let found: Vec<serde_json::Value> = serde_json::from_slice(&body).map_err(|_| StepError("pacs-response-not-dicom-json"))?;
    if found.is_empty() { Err(StepError("study-not-found")) } else { Ok(()) }
}
