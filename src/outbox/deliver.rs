//! The deliverer: one task per instance that claims due deliveries, builds their object once,
//! sends it (STOW-RS, MLLP or a FHIR transaction), and records the outcome with its
//! `output.delivery` audit entry in one transaction.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::sync::Notify;

use super::build::BuildContext;
use super::{AfterFailure, OutputKind, claim, delivered, ehr, failed, keep_payload, pacs, ris};
use crate::audit::checkpoint::CheckpointSigner;
use crate::audit::{Action, AuditEvent, AuditLog, Outcome};
use crate::backend_auth::BackendTokens;
use crate::configuration::{EhrDestination, RisDestination, Settings};
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
    /// SMART Backend Services tokens for the EHR destinations.
    pub tokens: Arc<BackendTokens>,
    /// Notified when a delivery is queued in this instance.
    pub wake: Arc<Notify>,
    /// Names this instance in lease owners.
    pub owner: String,
    pub shutdown: Shutdown,
}

/// Starts the deliverer when any output is configured.
pub fn spawn(ctx: DeliveryContext) -> Option<tokio::task::JoinHandle<()>> {
    if !ctx.settings.outputs.any() {
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

/// A failed attempt: its stable code, what the other side said (for the operator; never a
/// token or a patient detail), and whether retrying cannot help.
#[derive(Debug)]
pub struct Failure {
    pub code: &'static str,
    pub detail: Option<String>,
    pub permanent: bool,
}

impl Failure {
    pub fn new(code: &'static str, permanent: bool) -> Failure {
        Failure { code, detail: None, permanent }
    }

    pub fn with_detail(mut self, detail: String) -> Failure {
        self.detail = Some(detail);
        self
    }

    /// What `last_error` keeps: the code, then the detail.
    fn summary(&self) -> String {
        match &self.detail {
            Some(d) => format!("{}: {d}", self.code),
            None => self.code.to_owned(),
        }
    }
}

/// What a delivered attempt reports: the object's id, and where the destination keeps it.
struct Sent {
    object_id: String,
    location: Option<String>,
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
        Ok(sent) => {
            if !delivered(txn.conn(), &row.id, &ctx.owner).await? {
                tracing::warn!(delivery = %row.id, "lease lost before the delivery was recorded; its new owner sends it again");
            }
            let event = match OutputKind::parse(&row.kind) {
                Some(OutputKind::Hl7Oru) => event.entity("HL7Message", sent.object_id.clone()),
                Some(OutputKind::FhirBundle) => event.entity("DiagnosticReport", sent.object_id.clone()),
                _ => event.entity("SOPInstance", sent.object_id.clone()),
            };
            match &sent.location {
                Some(l) => event.detail("location", l.clone()),
                None => event,
            }
        }
        Err(f) => {
            // The other side's words stay in the delivery's row: an ACK's text may name the
            // patient, and logs must not.
            tracing::warn!(delivery = %row.id, kind = %row.kind, reason = f.code, "a delivery attempt failed");
            let next = match failed(txn.conn(), &row, &ctx.owner, &f.summary(), f.permanent, outputs).await? {
                AfterFailure::RetryAt(at) => serde_json::json!({"retry_at_ms": at}),
                AfterFailure::Dead => serde_json::json!("dead"),
                AfterFailure::LeaseLost => serde_json::json!("lease-lost"),
            };
            // Audit details are codes and references: the other side's words (which may name
            // the patient) stay in the delivery's `last_error` only.
            event.detail("reason", f.code).detail("next", next)
        }
    };
    txn.append(event).await?;
    txn.commit().await?;
    Ok(true)
}

/// A delivery's destination as configured.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// `row.destination` is the DICOMweb root itself.
    Pacs,
    Ris(&'a RisDestination),
    Ehr(&'a EhrDestination),
}

/// Builds (first time only) and sends the delivery's object.
async fn attempt(ctx: &DeliveryContext, row: &outbox::Model) -> Result<Sent, Failure> {
    let kind = OutputKind::parse(&row.kind).ok_or(Failure::new("unknown-output-kind", true))?;
    let outputs = &ctx.settings.outputs;
    // Where it goes, looked up once: a destination removed from the configuration is dead.
    let gone = || Failure::new("destination-not-configured", true).with_detail(row.destination.clone());
    let target = match kind {
        OutputKind::StowSr | OutputKind::StowSc => Target::Pacs,
        OutputKind::Hl7Oru => Target::Ris(outputs.ris_named(&row.destination).ok_or_else(gone)?),
        OutputKind::FhirBundle => Target::Ehr(outputs.ehr_at(&row.destination).ok_or_else(gone)?),
    };
    let (object_id, payload) = match (&row.object_id, &row.payload) {
        (Some(id), Some(payload)) => (id.clone(), payload.clone()),
        _ => {
            let root = (!outputs.uid_root.is_empty())
                .then(|| radsight_dicom_report::UidRoot::parse(&outputs.uid_root))
                .transpose()
                .map_err(|_| Failure::new("bad-uid-root", true))?;
            let build_ctx = BuildContext {
                db: &ctx.db,
                audit: &ctx.audit,
                signer: &ctx.signer,
                checkpoint_dir: &ctx.settings.audit.checkpoint_dir,
                uid_root: root.as_ref(),
                public_url: &ctx.settings.server.public_url,
            };
            let built = match target {
                Target::Pacs => pacs::build(&build_ctx, kind, &row.result_id).await,
                Target::Ris(ris) => ris::build(&build_ctx, ris, &row.id, &row.result_id).await,
                Target::Ehr(_) => ehr::build(&build_ctx, &row.result_id).await,
            };
            let (id, bytes) = built.map_err(|e| {
                tracing::warn!(error = %e, delivery = %row.id, "could not build an output object");
                Failure::new(e.code(), !e.is_transient())
            })?;
            keep_payload(&ctx.db, &row.id, &id, bytes.clone()).await.map_err(|_| Failure::new("database-unavailable", false))?;
            (id, bytes)
        }
    };
    let location = match target {
        Target::Pacs => {
            let dicomweb = &ctx.settings.dicomweb;
            let client = DicomwebClient::new(
                ctx.http.clone(),
                Duration::from_millis(dicomweb.timeout_ms),
                dicomweb.max_study_bytes,
                ctx.credentials.for_root(&row.destination).cloned(),
            );
            client.store(&row.destination, &row.study_uid, &[&payload]).await.map_err(|e| Failure::new(e.code(), !e.is_transient()))?;
            None
        }
        Target::Ris(ris) => {
            ris::send(ris, &object_id, &payload).await?;
            None
        }
        Target::Ehr(ehr) => Some(ehr::send(&ctx.tokens, &ctx.http, ehr, &payload).await?),
    };
    Ok(Sent { object_id, location })
}
