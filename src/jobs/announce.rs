//! What every ingestion route does with a study it learns about: make sure the `studies` table
//! knows it (so hooks show "analysis pending" for it) and queue its analysis job, inside the
//! caller's transaction. HL7 messages and FHIR notifications both come through here.

use sea_orm::{ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait};

use super::{Enqueued, JobSource, NewJob, enqueue};
use crate::domain::{PatientId, PatientNamespace, StudyInstanceUid};
use crate::store::entities::study;

/// A study announced by an order, a result or a notification.
#[derive(Debug, Clone)]
pub struct AnnouncedStudy {
    pub study_uid: StudyInstanceUid,
    pub patient: PatientId,
    /// Where `patient` is unique: the announcing EHR's, or the HL7 assigning authority's.
    pub namespace: PatientNamespace,
    pub accession: Option<String>,
    /// DICOM modality; `OT` when unknown.
    pub modality: Option<String>,
    /// `system|code` of the procedure.
    pub procedure_code: Option<String>,
    pub description: Option<String>,
    pub started_at: Option<i64>,
    pub endpoint: Option<String>,
    pub source: JobSource,
}

/// Who a known study belongs to, when that is not `patient` of `namespace`: its patient
/// reference and namespace. A Study Instance UID never moves a study to another patient: the
/// caller refuses the message and audits `identity.conflict`.
pub async fn conflicting_owner<C: ConnectionTrait>(
    conn: &C,
    uid: &StudyInstanceUid,
    namespace: &PatientNamespace,
    patient: &PatientId,
) -> Result<Option<StudyOwner>, DbErr> {
    let existing = study::Entity::find_by_id(uid.as_str().to_owned()).one(conn).await?;
    Ok(existing
        .filter(|s| s.patient_ref != patient.reference() || s.patient_namespace.as_deref() != Some(namespace.as_str()))
        .map(|s| StudyOwner { patient_ref: s.patient_ref, namespace: s.patient_namespace }))
}

/// The patient a stored study belongs to.
#[derive(Debug, Clone)]
pub struct StudyOwner {
    pub patient_ref: String,
    pub namespace: Option<String>,
}

impl StudyOwner {
    /// Adds the owner to an `identity.conflict` entry.
    pub fn describe(self, event: crate::audit::AuditEvent) -> crate::audit::AuditEvent {
        event.detail("study_patient", self.patient_ref).detail("study_namespace", self.namespace)
    }
}

/// Stores the study if it is new (an existing row is left as it is) and, when `analyse`, queues
/// its job. Returns the job, if one was asked for.
pub async fn announce_study<C: ConnectionTrait>(
    conn: &C,
    s: &AnnouncedStudy,
    analyse: bool,
    max_attempts: i32,
) -> Result<Option<Enqueued>, DbErr> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    study::Entity::insert(study::ActiveModel {
        study_uid: Set(s.study_uid.as_str().to_owned()),
        patient_ref: Set(s.patient.reference()),
        patient_namespace: Set(Some(s.namespace.as_str().to_owned())),
        accession: Set(s.accession.clone()),
        modality: Set(s.modality.clone().unwrap_or_else(|| "OT".into())),
        body_site: Set(None),
        procedure_code: Set(s.procedure_code.clone()),
        description: Set(s.description.clone()),
        started_at: Set(s.started_at),
        created_at: Set(now),
    })
    .on_conflict_do_nothing()
    .exec_without_returning(conn)
    .await?;
    if !analyse {
        return Ok(None);
    }
    let new = NewJob { study_uid: s.study_uid.clone(), patient: Some(s.patient.clone()), endpoint: s.endpoint.clone(), source: s.source };
    enqueue(conn, &new, max_attempts).await.map(Some)
}
