//! The deliverer: one task per instance that claims due deliveries, builds their object once,
//! sends it, and records the outcome with its `output.delivery` audit entry in one transaction.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::sync::Notify;

use super::pacs::{BuildContext, build};
use super::{AfterFailure, OutputKind, claim, delivered, failed, keep_payload};
use crate::audit::checkpoint::CheckpointSigner;
use crate::audit::{Action, AuditEvent, AuditLog, Outcome};
use crate::configuration::Settings;
use crate::dicomweb::{DicomwebClient, PacsCredentialStore};
use crate::state::Shutdown;
use crate::store::entities::outbox;

/// What the deliverer needs; cheap to clone.
#[derive(Clone)]
pub struct DeliveryContext {
    pub db: DatabaseConnection,
    pub audit: AuditLog,
    pub settings: Arc<Settings>,
    pub http: reqwest::Client,
    pub credentials: PacsCredentialStore,
    pub signer: Arc<CheckpointSigner>,
    /// Notified when a delivery is queued in this instance.
    pub wake: Arc<Notify>,
    /// Names this instance in lease owners.
    pub owner: String,
    pub shutdown: Shutdown,
}

/// Starts the deliverer when any output is configured.
pub fn spawn(ctx: DeliveryContext) -> Option<tokio::task::JoinHandle<()>> {
    if ctx.settings.outputs.pacs.is_empty() {
        return None;
    }
    Some(tokio::spawn(async move {
        let idle = Duration::from_millis(ctx.settings.outputs.poll_interval_ms);
        while !ctx.shutdown.is_draining() {
            match deliver_once(&ctx).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "the outbox could not reach the database"),
            }
            tokio::select! {
                _ = ctx.wake.notified() => {}
                _ = tokio::time::sleep(idle) => {}
                _ = ctx.shutdown.begun() => {}
            }
        }
    }))
}

/// A failed attempt: its stable code and whether retrying cannot help.
struct Failure {
    code: &'static str,
    permanent: bool,
}

/// Claims and attempts one delivery. Ok(false) when none was due.
pub async fn deliver_once(ctx: &DeliveryContext) -> anyhow::Result<bool> {
    let outputs = &ctx.settings.outputs;
    let Some(row) = claim(&ctx.db, &ctx.owner, outputs.lease_ms).await? else {
        return Ok(false);
    };
    let outcome = attempt(ctx, &row).await;
    let mut txn = ctx.audit.begin(&ctx.db).await?;
    let event = AuditEvent::new(Action::OutputDelivery, if outcome.is_ok() { Outcome::Success } else { Outcome::Error })
        .entity("AnalysisResult", row.result_id.clone())
        .entity("ImagingStudy", row.study_uid.clone())
        .entity("OutboxDelivery", row.id.clone())
        .detail("kind", row.kind.clone())
        .detail("destination", row.destination.clone())
        .detail("attempt", row.attempts);
    let event = match &outcome {
        Ok(uid) => {
            if !delivered(txn.conn(), &row.id, &ctx.owner).await? {
                tracing::warn!(delivery = %row.id, "lease lost before the delivery was recorded; its new owner sends it again");
            }
            event.entity("SOPInstance", uid.clone())
        }
        Err(f) => {
            let next = match failed(txn.conn(), &row, &ctx.owner, f.code, f.permanent, outputs).await? {
                AfterFailure::RetryAt(at) => serde_json::json!({"retry_at_ms": at}),
                AfterFailure::Dead => serde_json::json!("dead"),
                AfterFailure::LeaseLost => serde_json::json!("lease-lost"),
            };
            event.detail("reason", f.code).detail("next", next)
        }
    };
    txn.append(event).await?;
    txn.commit().await?;
    Ok(true)
}

/// Builds (first time only) and sends the delivery's object; its SOP Instance UID when stored.
async fn attempt(ctx: &DeliveryContext, row: &outbox::Model) -> Result<String, Failure> {
    let kind = OutputKind::parse(&row.kind).ok_or(Failure { code: "unknown-output-kind", permanent: true })?;
    let (uid, payload) = match (&row.sop_instance_uid, &row.payload) {
        (Some(uid), Some(payload)) => (uid.clone(), payload.clone()),
        _ => {
            let root = (!ctx.settings.outputs.uid_root.is_empty())
                .then(|| radsight_dicom_report::UidRoot::parse(&ctx.settings.outputs.uid_root))
                .transpose()
                .map_err(|_| Failure { code: "bad-uid-root", permanent: true })?;
            let build_ctx = BuildContext {
                db: &ctx.db,
                audit: &ctx.audit,
                signer: &ctx.signer,
                checkpoint_dir: &ctx.settings.audit.checkpoint_dir,
                uid_root: root.as_ref(),
                public_url: &ctx.settings.server.public_url,
            };
            let (uid, bytes) = build(&build_ctx, kind, &row.result_id).await.map_err(|e| {
                tracing::warn!(error = %e, delivery = %row.id, "could not build an output object");
                Failure { code: e.code(), permanent: !e.is_transient() }
            })?;
            keep_payload(&ctx.db, &row.id, &uid, bytes.clone())
                .await
                .map_err(|_| Failure { code: "database-unavailable", permanent: false })?;
            (uid, bytes)
        }
    };
    let dicomweb = &ctx.settings.dicomweb;
    let client = DicomwebClient::new(
        ctx.http.clone(),
        Duration::from_millis(dicomweb.timeout_ms),
        dicomweb.max_study_bytes,
        ctx.credentials.for_root(&row.destination).cloned(),
    );
    match client.store(&row.destination, &row.study_uid, &[&payload]).await {
        Ok(_) => Ok(uid),
        Err(e) => Err(Failure { code: e.code(), permanent: !e.is_transient() }),
    }
}
