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
//!    `dicomweb.fetch` with the instance and byte counts.
//! 5. **decode + analyse** (on a blocking thread): the instances are tried in order until one
//!    decodes and has a model ([`crate::analysis`]); audited as `dicom.decode` (header facts, or
//!    the reason it failed), then `model.inference`, whose entry is committed in one
//!    transaction with the stored result and its pictures. The job ends at stage `analysed`.
//!
//! A PACS that is down, answers an error or does not (yet) have the study fails the attempt,
//! which is retried with backoff; an oversize or malformed study, an image that cannot be
//! decoded, or a model refused for its weights' hash is `dead` at once, and the study gets a
//! `failed` result so its card says "unavailable" rather than "pending".

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{DatabaseConnection, EntityTrait};
use tokio::sync::Notify;

use super::{Failed, claim, fail, succeed};
use crate::analysis::{AnalysisError, Analyzer};
use crate::audit::{Action, AttachedRows, AuditEvent, AuditLog, Outcome};
use crate::configuration::{DicomwebSettings, JobSettings};
use crate::dicomweb::{DicomwebClient, DicomwebError, PacsCredentialStore};
use crate::results::store::{FailedResult, StoredResult};
use crate::store::entities::job;
use crate::store::{JobStage, ResultStatus};

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
    /// The model registry and loaded models.
    pub analyzer: Arc<Analyzer>,
    /// Once begun, workers claim no new job; the job under way finishes or is handed back.
    pub shutdown: crate::state::Shutdown,
    /// The memory every worker of this process shares (see [`super::memory`]).
    pub memory: super::memory::MemoryBudget,
    /// Where results are delivered (`outputs`, queued in the result's transaction, for the
    /// patient namespaces the settings resolve), and the deliverer to wake when some are.
    pub settings: std::sync::Arc<crate::configuration::Settings>,
    pub outbox_wake: Arc<Notify>,
}

/// A failed step: a stable code for the job row and the audit trail, and whether retrying
/// cannot help (the job then goes to `dead` at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepError {
    pub code: &'static str,
    pub permanent: bool,
}

/// How a job's steps ended: the stage reached and, when a result was made, the result with its
/// audit entry, to commit in the same transaction as the job's success.
struct Finished {
    stage: JobStage,
    /// The result rows with their entries: one per model that ran (or one for the study).
    results: Vec<(AuditEvent, Box<dyn AttachedRows>)>,
    /// The ids of results with findings, whose deliveries are queued with them.
    deliver: Vec<String>,
}

impl Finished {
    fn at(stage: JobStage) -> Finished {
        Finished { stage, results: Vec::new(), deliver: Vec::new() }
    }
}

impl From<DicomwebError> for StepError {
    fn from(e: DicomwebError) -> Self {
        StepError { code: e.code(), permanent: !e.is_transient() }
    }
}

/// Starts `ctx.jobs.workers` worker tasks; each ends once shutdown has begun and its job under
/// way is done.
pub fn spawn_workers(ctx: WorkerContext) -> Vec<tokio::task::JoinHandle<()>> {
    (0..ctx.jobs.workers)
        .map(|n| {
            let ctx = ctx.clone();
            tokio::spawn(async move { run_worker(ctx, n).await })
        })
        .collect()
}

async fn run_worker(ctx: WorkerContext, n: usize) {
    let owner = format!("{}/{n}", ctx.instance);
    let idle = Duration::from_millis(ctx.jobs.poll_interval_ms);
    while !ctx.shutdown.is_draining() {
        match run_once(&ctx, &owner).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "job worker could not reach the database"),
        }
        tokio::select! {
            _ = ctx.wake.notified() => {}
            _ = tokio::time::sleep(idle) => {}
            _ = ctx.shutdown.begun() => {}
        }
    }
}

/// Hands this instance's running jobs back to the queue at shutdown (their attempt not counted:
/// the job did not fail), each audited as `job.retried` with reason `shutdown`. A job whose
/// analysis is still running elsewhere in this process can no longer commit: its lease is gone.
pub async fn hand_back_jobs(db: &DatabaseConnection, audit: &AuditLog, instance: &str) -> anyhow::Result<usize> {
    let mut txn = audit.begin(db).await?;
    let released = super::release_leases(txn.conn(), &format!("{instance}/")).await?;
    for job in &released {
        txn.append(event(job, Action::JobRetried, Outcome::Success).detail("reason", "shutdown")).await?;
    }
    txn.commit().await?;
    Ok(released.len())
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
        Ok(Finished { stage, results, deliver }) => {
            // The result, its entry, its deliveries and the job's success commit together: a
            // stored result always belongs to a finished job and has its deliveries queued, and
            // a job whose lease was lost stores nothing.
            let mut txn = ctx.audit.begin(&ctx.db).await?;
            if succeed(txn.conn(), &job.id, owner, stage).await? {
                for (entry, rows) in results {
                    txn.append_with(entry, Some(rows)).await?;
                }
                let mut queued = 0;
                for result_id in &deliver {
                    queued += crate::outbox::enqueue_for_result(txn.conn(), &ctx.settings, result_id, &job.study_uid).await?;
                }
                txn.append(
                    event(&job, Action::JobSucceeded, Outcome::Success).detail("stage", stage.as_str()).detail("attempt", job.attempts),
                )
                .await?;
                txn.commit().await?;
                if queued > 0 {
                    ctx.outbox_wake.notify_one();
                }
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
                event(&job, Action::JobFailed, Outcome::Error).detail("reason", code).detail("attempt", job.attempts).detail("next", next),
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

async fn run_steps(ctx: &WorkerContext, job: &job::Model) -> Result<Finished, StepError> {
    let root = job.endpoint.clone().or_else(|| Some(ctx.dicomweb.default_endpoint.clone()).filter(|e| !e.is_empty()));
    let Some(root) = root else {
        // No PACS known for this study: it stays recorded, waiting for a fetch.
        return Ok(Finished::at(JobStage::FetchPending));
    };
    let client = DicomwebClient::new(
        ctx.http.clone(),
        Duration::from_millis(ctx.dicomweb.timeout_ms),
        ctx.dicomweb.max_study_bytes,
        ctx.credentials.for_root(&root).cloned(),
    )
    .with_transfer_syntax(&ctx.dicomweb.transfer_syntax);

    let found = client.find_instances(&root, &job.study_uid).await;
    audit_fetch(ctx, job, "qido-rs", found.as_ref().map(|i| serde_json::json!({"instances": i.len()}))).await?;
    let found = found.map_err(StepError::from)?;

    let retrieved = client.retrieve_selected(&root, &job.study_uid, &found, &ctx.dicomweb.select).await;
    audit_fetch(
        ctx,
        job,
        "wado-rs",
        retrieved.as_ref().map(|r| serde_json::json!({"instances": r.instances.len(), "bytes": r.bytes, "transfer_syntax": r.asked})),
    )
    .await?;
    let retrieved = retrieved.map_err(StepError::from)?;
    analyse(ctx, job, retrieved.instances).await
}

/// A result row that ends a study without findings, for this job.
fn unanalysed(job: &job::Model, status: ResultStatus, error_code: &str) -> FailedResult {
    FailedResult {
        id: uuid::Uuid::new_v4().to_string(),
        study_uid: job.study_uid.clone(),
        job_id: Some(job.id.clone()),
        model: None,
        error_code: error_code.to_owned(),
        status,
    }
}

/// Decodes the study's instances until one can be analysed and runs every routed model on it;
/// the results and their entries are handed back to commit with the job's success.
async fn analyse(ctx: &WorkerContext, job: &job::Model, instances: Vec<Vec<u8>>) -> Result<Finished, StepError> {
    let analyzer = ctx.analyzer.clone();
    let procedure = crate::store::entities::study::Entity::find_by_id(job.study_uid.clone())
        .one(&ctx.db)
        .await
        .map_err(|_| StepError { code: "database-unavailable", permanent: false })?
        .and_then(|s| s.procedure_code);
    // Reserve what the largest image declares before anything is decoded; held until the
    // analysis ends, so two big studies wait for each other.
    let declared = instances.iter().filter_map(|b| radsight_dicom::declared_image(b)).map(|d| d.samples());
    let retrieved: u64 = instances.iter().map(|b| b.len() as u64).sum();
    let reservation = ctx.memory.reserve(super::memory::MemoryBudget::need_mib(declared, retrieved)).await;
    let outcome = tokio::task::spawn_blocking(move || {
        let _reservation = reservation;
        // The first instance on which a model succeeds; else the first that decoded, with its
        // failures; else the first instance's error.
        let mut first_decoded = None;
        let mut first_error = None;
        for bytes in &instances {
            match analyzer.analyse_all(bytes, procedure.as_deref()) {
                Ok(outcomes) if outcomes.iter().any(|(_, o)| o.is_ok()) => return Ok(outcomes),
                // A refused model refuses every instance alike.
                Ok(outcomes) if outcomes.iter().all(|(_, o)| matches!(o, Err(AnalysisError::ModelRefused { .. }))) => {
                    return Ok(outcomes);
                }
                Ok(outcomes) => {
                    first_decoded.get_or_insert(outcomes);
                }
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        match (first_decoded, first_error) {
            (Some(outcomes), _) => Ok(outcomes),
            (None, Some(e)) => Err(e),
            (None, None) => Err(AnalysisError::Inference("the study holds no instance".into())),
        }
    })
    .await
    .map_err(|_| StepError { code: "analysis-panicked", permanent: true })?;

    let outcomes = match outcome {
        Ok(outcomes) => outcomes,
        // Not an error: this kind of image is outside every model's intended use.
        Err(AnalysisError::NoModel { decoded, .. }) => {
            let rows = unanalysed(job, ResultStatus::NotApplicable, "no-model-applies");
            let ev = event(job, Action::DicomDecode, Outcome::Success)
                .entity("AnalysisResult", rows.id.clone())
                .detail("image", *decoded)
                .detail("model", "none applies");
            return Ok(Finished { stage: JobStage::NotApplicable, results: vec![(ev, Box::new(rows))], deliver: Vec::new() });
        }
        Err(e) => return Err(study_failed(ctx, job, e).await?),
    };
    let (done, failed): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(|(_, o)| o.is_ok());
    let done: Vec<_> = done.into_iter().filter_map(|(_, o)| o.ok()).collect();
    let mut failed = failed.into_iter().filter_map(|(model, o)| o.err().map(|e| (model, e)));
    let Some(first) = done.first() else {
        // Every model failed: each refusal is audited, and the first failure decides.
        let first_error = failed.next().map(|(_, e)| e).unwrap_or(AnalysisError::Inference("no model ran".into()));
        for (_, e) in failed {
            audit_refusal(ctx, job, &e).await?;
        }
        return Err(study_failed(ctx, job, first_error).await?);
    };
    let decoded = first.decoded.clone();
    let instance = first.sop_instance_uid.clone();
    audit(ctx, job, Action::DicomDecode, Outcome::Success, |ev| {
        let ev = match instance {
            Some(uid) => ev.entity("SOPInstance", uid),
            None => ev,
        };
        ev.detail("image", decoded)
    })
    .await
    .map_err(audit_unavailable)?;

    let mut finished = Finished::at(JobStage::Analysed);
    for analysed in done {
        let id = uuid::Uuid::new_v4().to_string();
        let ev = inference_event(job, &id, &analysed);
        // Segmentations stay in radsight for now: the PACS, RIS and EHR outputs speak
        // probabilities, and there is no DICOM SEG writer yet.
        let deliver = !analysed.is_segmentation();
        let stored = StoredResult(analysed.into_result(id.clone(), job.study_uid.clone(), Some(job.id.clone())));
        finished.results.push((ev, Box::new(stored)));
        if deliver {
            finished.deliver.push(id);
        }
    }
    // A model that failed beside others that succeeded: its own failed row, so its card says so.
    for (model, e) in failed {
        audit_refusal(ctx, job, &e).await?;
        let mut row = unanalysed(job, ResultStatus::Failed, e.code());
        row.model = ctx.analyzer.identity(&model);
        let ev = event(job, Action::ModelInference, Outcome::Error)
            .entity("AnalysisResult", row.id.clone())
            .entity("Model", model)
            .detail("reason", e.code());
        finished.results.push((ev, Box::new(row)));
    }
    Ok(finished)
}

/// The `model.inference` entry of a stored result.
fn inference_event(job: &job::Model, id: &str, analysed: &crate::analysis::Analysed) -> AuditEvent {
    event(job, Action::ModelInference, Outcome::Success)
        .entity("AnalysisResult", id.to_owned())
        .entity("Model", format!("{}@{}", analysed.model.id, analysed.model.version))
        .detail("weights_sha256", analysed.model.weights_sha256.clone())
        .detail("input_sha256", analysed.input_sha256.clone())
        .detail(
            "findings",
            analysed
                .findings
                .iter()
                .map(|f| serde_json::json!({"code": f.code, "probability": f.probability, "positive": f.is_positive()}))
                .collect::<Vec<_>>(),
        )
        .detail("saliency", analysed.saliency_method.clone())
        .detail("deletion_auc", analysed.deletion_auc)
        .detail("random_deletion_auc", analysed.random_deletion_auc)
        .detail("regions", analysed.is_segmentation().then(|| {
            analysed.findings.iter().map(|f| serde_json::json!({"code": f.code, "area": f.area})).collect::<Vec<_>>()
        }))
        .detail("road", analysed.explanation.get("road").map(|r| {
            serde_json::json!({"combined": r["map"]["combined"], "random_combined": r["random"]["combined"], "beats_random": r["beats_random"]})
        }))
        .detail("runtime_ms", analysed.runtime_ms)
}

/// Audits a model refusal (weights that do not match their card).
async fn audit_refusal(ctx: &WorkerContext, job: &job::Model, e: &AnalysisError) -> Result<(), StepError> {
    if let AnalysisError::ModelRefused { model, .. } = e {
        audit(ctx, job, Action::ModelRefused, Outcome::Error, |ev| {
            ev.entity("Model", model.clone()).detail("reason", "weights-hash-mismatch-or-unreadable")
        })
        .await
        .map_err(audit_unavailable)?;
    }
    Ok(())
}

/// Audits why the study could not be analysed; a permanent failure also stores a failed result
/// (the study shows "unavailable", not "pending"). Gives the job's error.
async fn study_failed(ctx: &WorkerContext, job: &job::Model, e: AnalysisError) -> Result<StepError, StepError> {
    let code = e.code();
    match &e {
        AnalysisError::Decode(_) => {
            audit(ctx, job, Action::DicomDecode, Outcome::Error, |ev| ev.detail("reason", code)).await.map_err(audit_unavailable)?
        }
        AnalysisError::ModelRefused { .. } => audit_refusal(ctx, job, &e).await?,
        _ => {}
    }
    if e.is_permanent() {
        let failed = unanalysed(job, ResultStatus::Failed, code);
        let ev = event(job, Action::ModelInference, Outcome::Error).entity("AnalysisResult", failed.id.clone()).detail("reason", code);
        ctx.audit.record_with(&ctx.db, ev, Some(Box::new(failed))).await.map_err(audit_unavailable)?;
    }
    Ok(StepError { code, permanent: e.is_permanent() })
}

fn audit_unavailable<E>(_: E) -> StepError {
    StepError { code: "audit-unavailable", permanent: false }
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
