//! The transactional outbox: deliveries of results to other systems, kept in the `outbox` table.
//!
//! Life of a delivery: [`enqueue_for_result`] (in the same transaction as the result and its
//! `model.inference` entry, so a stored result always has its deliveries) → `pending` → the
//! deliverer [`claim`]s it with a lease → `delivering` → the object is built once
//! ([`pacs::build`]) and kept with the row, so every retry sends the same bytes and the same SOP
//! Instance UID → sent ([`deliver`]) → `delivered`, or back to `pending` after a backoff, or
//! `dead` when retrying cannot help or the attempts are spent. `radsight outbox list|retry`
//! shows and revives them; every attempt and outcome is an `output.delivery` audit entry.
//!
//! The outputs: a TID 1500 Comprehensive SR and a Secondary Capture of the saliency overlay,
//! stored by STOW-RS into each `outputs.pacs` root ([`pacs`]); an ORU^R01 over MLLP to each
//! `outputs.ris` destination, delivered on its AA ([`ris`]); and the result's FHIR Bundle as a
//! transaction of conditional creates to each `outputs.ehr` server, authorised by SMART Backend
//! Services ([`ehr`]). Each object carries the log receipt of the result's `model.inference`
//! entry.

pub mod build;
pub mod deliver;
pub mod ehr;
pub mod pacs;
pub mod ris;

use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder};

use crate::configuration::{OutputSettings, Settings};
use crate::domain::PatientNamespace;
use crate::store::entities::{outbox, study};
use crate::store::now_ms;

/// What a delivery sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// The TID 1500 Comprehensive SR, by STOW-RS.
    StowSr,
    /// The Secondary Capture of the saliency overlay, by STOW-RS.
    StowSc,
    /// An HL7 v2.5.1 ORU^R01 over MLLP, to a RIS or interface engine.
    Hl7Oru,
    /// The result's FHIR Bundle as a transaction of conditional creates, to an EHR.
    FhirBundle,
}

impl OutputKind {
    pub const PACS: [OutputKind; 2] = [OutputKind::StowSr, OutputKind::StowSc];
    const ALL: [OutputKind; 4] = [OutputKind::StowSr, OutputKind::StowSc, OutputKind::Hl7Oru, OutputKind::FhirBundle];

    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::StowSr => "stow-sr",
            OutputKind::StowSc => "stow-sc",
            OutputKind::Hl7Oru => "hl7-oru",
            OutputKind::FhirBundle => "fhir-bundle",
        }
    }

    pub fn parse(s: &str) -> Option<OutputKind> {
        OutputKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivering,
    Delivered,
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivering => "delivering",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }
}

/// Queues the configured deliveries of result `result_id` (none when no output is
/// configured), inside the caller's transaction. Idempotent per (result, kind, destination).
///
/// The PACS outputs go into the study itself. The RIS and the EHR get only results of their own
/// patient namespace: a patient id from another namespace could name someone else there.
pub async fn enqueue_for_result<C: ConnectionTrait>(
    conn: &C,
    settings: &Settings,
    result_id: &str,
    study_uid: &str,
) -> Result<usize, DbErr> {
    let outputs = &settings.outputs;
    let mut wanted: Vec<(OutputKind, String)> = Vec::new();
    for root in &outputs.pacs {
        wanted.extend(OutputKind::PACS.map(|k| (k, root.trim_end_matches('/').to_owned())));
    }
    if !(outputs.ris.is_empty() && outputs.ehr.is_empty()) {
        let namespace = study::Entity::find_by_id(study_uid.to_owned()).one(conn).await?.and_then(|s| s.patient_namespace);
        let same = |ns: PatientNamespace| namespace.as_deref() == Some(ns.as_str());
        for ris in &outputs.ris {
            if same(settings.namespace_of_ris(ris)) {
                wanted.push((OutputKind::Hl7Oru, ris.name.clone()));
            } else {
                tracing::info!(destination = %ris.name, "a result of another patient namespace is not sent to this RIS");
            }
        }
        for ehr in &outputs.ehr {
            if same(settings.namespace_of_ehr(ehr)) {
                wanted.push((OutputKind::FhirBundle, ehr.fhir_base.trim_end_matches('/').to_owned()));
            } else {
                tracing::info!(destination = %ehr.fhir_base, "a result of another patient namespace is not sent to this EHR");
            }
        }
    }
    let now = now_ms();
    let mut queued = 0;
    for (kind, destination) in wanted {
        let row = outbox::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            result_id: Set(result_id.to_owned()),
            study_uid: Set(study_uid.to_owned()),
            kind: Set(kind.as_str().to_owned()),
            destination: Set(destination),
            state: Set(DeliveryState::Pending.as_str().to_owned()),
            attempts: Set(0),
            max_attempts: Set(outputs.max_attempts),
            run_after: Set(now),
            lease_owner: Set(None),
            lease_until: Set(None),
            last_error: Set(None),
            object_id: Set(None),
            payload: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            delivered_at: Set(None),
        };
        outbox::Entity::insert(row)
            .on_conflict(
                sea_orm::sea_query::OnConflict::columns([outbox::Column::ResultId, outbox::Column::Kind, outbox::Column::Destination])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(conn)
            .await?;
        queued += 1;
    }
    Ok(queued)
}

/// Takes the next due delivery for `owner`, leasing it for `lease_ms` and counting an attempt.
pub async fn claim(db: &DatabaseConnection, owner: &str, lease_ms: u64) -> Result<Option<outbox::Model>, DbErr> {
    crate::store::queue::claim_next::<outbox::Entity>(
        db,
        "outbox",
        DeliveryState::Pending.as_str(),
        DeliveryState::Delivering.as_str(),
        owner,
        lease_ms,
    )
    .await
}

/// Keeps the object built for a delivery and its id (SOP Instance UID, MSH-10 control id or
/// DiagnosticReport identifier), so that retries send it unchanged.
pub async fn keep_payload<C: ConnectionTrait>(conn: &C, id: &str, object_id: &str, payload: Vec<u8>) -> Result<(), DbErr> {
    outbox::Entity::update_many()
        .col_expr(outbox::Column::ObjectId, Some(object_id.to_owned()).into())
        .col_expr(outbox::Column::Payload, Some(payload).into())
        .col_expr(outbox::Column::UpdatedAt, now_ms().into())
        .filter(outbox::Column::Id.eq(id))
        .exec(conn)
        .await
        .map(|_| ())
}

/// Marks a delivery this owner holds as delivered. False when the lease was lost.
pub async fn delivered<C: ConnectionTrait>(conn: &C, id: &str, owner: &str) -> Result<bool, DbErr> {
    let now = now_ms();
    let r = outbox::Entity::update_many()
        .col_expr(outbox::Column::State, DeliveryState::Delivered.as_str().into())
        .col_expr(outbox::Column::LeaseOwner, Option::<String>::None.into())
        .col_expr(outbox::Column::LeaseUntil, Option::<i64>::None.into())
        .col_expr(outbox::Column::LastError, Option::<String>::None.into())
        .col_expr(outbox::Column::DeliveredAt, Some(now).into())
        .col_expr(outbox::Column::UpdatedAt, now.into())
        .filter(outbox::Column::Id.eq(id))
        .filter(outbox::Column::State.eq(DeliveryState::Delivering.as_str()))
        .filter(outbox::Column::LeaseOwner.eq(owner))
        .exec(conn)
        .await?;
    Ok(r.rows_affected == 1)
}

/// What [`failed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Pending again, not before this time (unix ms).
    RetryAt(i64),
    Dead,
    LeaseLost,
}

/// Records a failed attempt: pending again after a backoff, or `dead` when `give_up` or out of
/// attempts.
pub async fn failed<C: ConnectionTrait>(
    conn: &C,
    row: &outbox::Model,
    owner: &str,
    code: &str,
    give_up: bool,
    settings: &OutputSettings,
) -> Result<AfterFailure, DbErr> {
    let now = now_ms();
    let (state, run_after, outcome) = if give_up || row.attempts >= row.max_attempts {
        (DeliveryState::Dead, row.run_after, AfterFailure::Dead)
    } else {
        let at = now + crate::store::backoff_ms(row.attempts, settings.backoff_base_ms, settings.backoff_max_ms) as i64;
        (DeliveryState::Pending, at, AfterFailure::RetryAt(at))
    };
    let r = outbox::Entity::update_many()
        .col_expr(outbox::Column::State, state.as_str().into())
        .col_expr(outbox::Column::RunAfter, run_after.into())
        .col_expr(outbox::Column::LeaseOwner, Option::<String>::None.into())
        .col_expr(outbox::Column::LeaseUntil, Option::<i64>::None.into())
        .col_expr(outbox::Column::LastError, Some(code.to_owned()).into())
        .col_expr(outbox::Column::UpdatedAt, now.into())
        .filter(outbox::Column::Id.eq(row.id.as_str()))
        .filter(outbox::Column::State.eq(DeliveryState::Delivering.as_str()))
        .filter(outbox::Column::LeaseOwner.eq(owner))
        .exec(conn)
        .await?;
    Ok(if r.rows_affected == 1 { outcome } else { AfterFailure::LeaseLost })
}

/// Deliveries, newest first, optionally only those in `state`.
pub async fn list(db: &DatabaseConnection, state: Option<&str>) -> Result<Vec<outbox::Model>, DbErr> {
    let mut q = outbox::Entity::find().order_by_desc(outbox::Column::CreatedAt);
    if let Some(s) = state {
        q = q.filter(outbox::Column::State.eq(s));
    }
    q.all(db).await
}

/// Puts a dead delivery back as pending with a fresh set of attempts (the object it built is
/// kept, so the same instance is sent). False when there is no dead delivery with that id.
pub async fn retry<C: ConnectionTrait>(conn: &C, id: &str) -> Result<bool, DbErr> {
    let now = now_ms();
    let r = outbox::Entity::update_many()
        .col_expr(outbox::Column::State, DeliveryState::Pending.as_str().into())
        .col_expr(outbox::Column::Attempts, 0.into())
        .col_expr(outbox::Column::RunAfter, now.into())
        .col_expr(outbox::Column::UpdatedAt, now.into())
        .filter(outbox::Column::Id.eq(id))
        .filter(outbox::Column::State.eq(DeliveryState::Dead.as_str()))
        .exec(conn)
        .await?;
    Ok(r.rows_affected == 1)
}
