//! The durable analysis job queue, kept in the `jobs` table.
//!
//! Life of a job: [`enqueue`] (in the same transaction as whatever announced the study, so an
//! acknowledged study always has its job) → `queued` → a worker [`claim`]s it, taking a lease →
//! `running` → [`succeed`] or [`fail`]. A failure goes back to `queued` with an exponential
//! backoff ([`backoff_ms`]) until `max_attempts`, then to `dead`, where `radsight jobs retry`
//! can revive it. A worker that dies holding a job leaves its lease to expire; the job is then
//! claimed again (the claim counts as another attempt).
//!
//! Claiming is safe between instances: on PostgreSQL one `UPDATE ... WHERE id = (SELECT ...
//! FOR UPDATE SKIP LOCKED)`, on SQLite a `BEGIN IMMEDIATE` transaction (one writer at a time).
//! Finishing checks the lease owner, so a worker whose lease was taken over cannot overwrite
//! the new owner's result.

pub mod announce;
pub mod memory;
pub mod worker;

use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder};

use crate::domain::{PatientId, StudyInstanceUid};
use crate::store::entities::job;
use crate::store::{JobStage, JobState};
pub use crate::store::{backoff_ms, now_ms};

pub const KIND_ANALYSE_STUDY: &str = "analyse-study";

/// Where the study was announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobSource {
    Hl7,
    Fhir,
}

impl JobSource {
    pub fn as_str(self) -> &'static str {
        match self {
            JobSource::Hl7 => "hl7",
            JobSource::Fhir => "fhir",
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub study_uid: StudyInstanceUid,
    pub patient: Option<PatientId>,
    /// An allowlisted DICOMweb root, when the announcement named one.
    pub endpoint: Option<String>,
    pub source: JobSource,
}

/// The result of [`enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub id: String,
    /// False when an unfinished job for the same study already existed and was reused.
    pub created: bool,
}

/// Adds an analysis job for a study, unless one is already queued or running for it.
pub async fn enqueue<C: ConnectionTrait>(conn: &C, new: &NewJob, max_attempts: i32) -> Result<Enqueued, DbErr> {
    let existing = job::Entity::find()
        .filter(job::Column::StudyUid.eq(new.study_uid.as_str()))
        .filter(job::Column::State.is_in([JobState::Queued, JobState::Running]))
        .one(conn)
        .await?;
    if let Some(j) = existing {
        return Ok(Enqueued { id: j.id, created: false });
    }
    let now = now_ms();
    let id = uuid::Uuid::new_v4().to_string();
    job::Entity::insert(job::ActiveModel {
        id: Set(id.clone()),
        kind: Set(KIND_ANALYSE_STUDY.into()),
        study_uid: Set(new.study_uid.as_str().to_owned()),
        patient_ref: Set(new.patient.as_ref().map(PatientId::reference)),
        endpoint: Set(new.endpoint.clone()),
        source: Set(new.source.as_str().into()),
        state: Set(JobState::Queued.as_str().into()),
        stage: Set(Some(JobStage::Received.as_str().into())),
        attempts: Set(0),
        max_attempts: Set(max_attempts),
        run_after: Set(now),
        lease_owner: Set(None),
        lease_until: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(Enqueued { id, created: true })
}

/// Takes the next due job (queued and due, or running with an expired lease) for `owner`,
/// leasing it for `lease_ms` and counting an attempt.
pub async fn claim(db: &DatabaseConnection, owner: &str, lease_ms: u64) -> Result<Option<job::Model>, DbErr> {
    crate::store::queue::claim_next::<job::Entity>(db, "jobs", JobState::Queued.as_str(), JobState::Running.as_str(), owner, lease_ms).await
}

/// Marks a job this owner holds as done at `stage`. False when the lease was lost.
pub async fn succeed<C: ConnectionTrait>(conn: &C, id: &str, owner: &str, stage: JobStage) -> Result<bool, DbErr> {
    let r = job::Entity::update_many()
        .col_expr(job::Column::State, JobState::Succeeded.as_str().into())
        .col_expr(job::Column::Stage, Some(stage.as_str()).into())
        .col_expr(job::Column::LeaseOwner, Option::<String>::None.into())
        .col_expr(job::Column::LeaseUntil, Option::<i64>::None.into())
        .col_expr(job::Column::LastError, Option::<String>::None.into())
        .col_expr(job::Column::UpdatedAt, now_ms().into())
        .filter(job::Column::Id.eq(id))
        .filter(job::Column::State.eq(JobState::Running))
        .filter(job::Column::LeaseOwner.eq(owner))
        .exec(conn)
        .await?;
    Ok(r.rows_affected == 1)
}

/// What [`fail`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Queued again, not before this time (unix ms).
    RetryAt(i64),
    /// Out of attempts.
    Dead,
    /// The lease had been lost; nothing was changed.
    LeaseLost,
}

/// Records a failed attempt: back to `queued` after a backoff, or `dead` when attempts are
/// spent or `give_up` (retrying cannot help).
pub async fn fail<C: ConnectionTrait>(
    conn: &C,
    job: &job::Model,
    owner: &str,
    error_code: &str,
    give_up: bool,
    backoff_base_ms: u64,
    backoff_max_ms: u64,
) -> Result<Failed, DbErr> {
    let now = now_ms();
    let (next_state, run_after, outcome) = if give_up || job.attempts >= job.max_attempts {
        (JobState::Dead, job.run_after, Failed::Dead)
    } else {
        let at = now + backoff_ms(job.attempts, backoff_base_ms, backoff_max_ms) as i64;
        (JobState::Queued, at, Failed::RetryAt(at))
    };
    let r = job::Entity::update_many()
        .col_expr(job::Column::State, next_state.as_str().into())
        .col_expr(job::Column::RunAfter, run_after.into())
        .col_expr(job::Column::LeaseOwner, Option::<String>::None.into())
        .col_expr(job::Column::LeaseUntil, Option::<i64>::None.into())
        .col_expr(job::Column::LastError, Some(error_code.to_owned()).into())
        .col_expr(job::Column::UpdatedAt, now.into())
        .filter(job::Column::Id.eq(job.id.as_str()))
        .filter(job::Column::State.eq(JobState::Running))
        .filter(job::Column::LeaseOwner.eq(owner))
        .exec(conn)
        .await?;
    Ok(if r.rows_affected == 1 { outcome } else { Failed::LeaseLost })
}

/// Puts every running job leased by an owner starting with `owner_prefix` back in the queue, due
/// now, without counting the attempt it was on. Returns the jobs as they were.
pub async fn release_leases<C: ConnectionTrait>(conn: &C, owner_prefix: &str) -> Result<Vec<job::Model>, DbErr> {
    let held = job::Entity::find()
        .filter(job::Column::State.eq(JobState::Running))
        .filter(job::Column::LeaseOwner.starts_with(owner_prefix))
        .all(conn)
        .await?;
    let now = now_ms();
    for j in &held {
        job::Entity::update_many()
            .col_expr(job::Column::State, JobState::Queued.as_str().into())
            .col_expr(job::Column::Attempts, (j.attempts - 1).max(0).into())
            .col_expr(job::Column::RunAfter, now.into())
            .col_expr(job::Column::LeaseOwner, Option::<String>::None.into())
            .col_expr(job::Column::LeaseUntil, Option::<i64>::None.into())
            .col_expr(job::Column::UpdatedAt, now.into())
            .filter(job::Column::Id.eq(j.id.as_str()))
            .filter(job::Column::LeaseOwner.eq(j.lease_owner.clone()))
            .exec(conn)
            .await?;
    }
    Ok(held)
}

/// Jobs, newest first, optionally only those in `state`.
pub async fn list(db: &DatabaseConnection, state: Option<&str>) -> Result<Vec<job::Model>, DbErr> {
    let mut q = job::Entity::find().order_by_desc(job::Column::CreatedAt);
    if let Some(s) = state {
        q = q.filter(job::Column::State.eq(s));
    }
    q.all(db).await
}

/// Puts a dead job back in the queue with a fresh set of attempts. False when there is no dead
/// job with that id.
pub async fn retry<C: ConnectionTrait>(conn: &C, id: &str) -> Result<bool, DbErr> {
    let now = now_ms();
    let r = job::Entity::update_many()
        .col_expr(job::Column::State, JobState::Queued.as_str().into())
        .col_expr(job::Column::Attempts, 0.into())
        .col_expr(job::Column::RunAfter, now.into())
        .col_expr(job::Column::UpdatedAt, now.into())
        .filter(job::Column::Id.eq(id))
        .filter(job::Column::State.eq(JobState::Dead))
        .exec(conn)
        .await?;
    Ok(r.rows_affected == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let cases = [(1, 1000), (2, 2000), (3, 4000), (4, 8000), (5, 10_000), (60, 10_000), (0, 1000)];
        for (attempts, expected) in cases {
            assert_eq!(backoff_ms(attempts, 1000, 10_000), expected, "after {attempts} attempts");
        }
    }
}
