//! What an HL7 message does, from bytes to ACK.
//!
//! Life of a message: check its source address against `hl7.allowed_sources` → decode the text
//! (UTF-8, else Latin-1) → read it ([`parse_imaging_message`]) → check `MSH-3`/`MSH-4` against
//! `hl7.senders` → in the audit log's group commit (one transaction for the messages of every
//! connection waiting at that moment, each message in its own savepoint), appending its audit
//! entries as it goes: look up
//! `(sender, MSH-10)` in `hl7_messages` (a resend, the same content but for `MSH-7`, is answered
//! AA again and changes nothing; the same control id with other content is answered AE),
//! store or update the order, store the study and queue its job
//! ([`announce_study`]), remember the control id → commit → AA. Nothing is acknowledged AA
//! before that commit. A rejected message is audited and answered AE/AR; a database failure is
//! answered AE (code 207) so that the sender sends it again, and so is a message that found the
//! audit log's queue full (`audit.max_pending`; counted in the refusal summary, not logged).
//!
//! A refused sender (an address or an `MSH-3`/`MSH-4` pair not allowed) is answered AR and
//! audited through the refusal tally: the first from its address in a window in full, the rest
//! counted into one `refusal.summary` entry.

use std::net::IpAddr;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};
use tokio::sync::Notify;

use super::ack::build_ack;
use super::message::{
    AckCode, Header, ImagingMessage, MessageKind, ParseOptions, Rejection, error_code, parse_imaging_message, read_header,
    reject_unreadable, rejection,
};
use crate::audit::{Action, AuditError, AuditEvent, AuditLog, GroupWork, GroupWriter, Outcome};
use crate::domain::PatientNamespace;
use crate::jobs::JobSource;
use crate::jobs::announce::{AnnouncedStudy, announce_study, conflicting_owner};
use crate::store::entities::{hl7_message, imaging_order};

/// What message handling needs; shared by every connection.
#[derive(Clone)]
pub struct IngestContext {
    pub db: DatabaseConnection,
    pub audit: AuditLog,
    pub parse: ParseOptions,
    pub max_attempts: i32,
    /// Woken when a job is queued, so that a local worker starts on it at once.
    pub wake: Arc<Notify>,
    /// Who may send: source address ranges, and `MSH-3`/`MSH-4` pairs (empty: any).
    pub senders: SenderPolicy,
    /// The configuration, for patient namespaces.
    pub settings: Arc<crate::configuration::Settings>,
}

/// The HL7 sender allowlist (`hl7.allowed_sources`, `hl7.senders`).
#[derive(Debug, Clone, Default)]
pub struct SenderPolicy {
    pub sources: Vec<ipnet::IpNet>,
    pub senders: Vec<crate::configuration::Hl7Sender>,
}

impl SenderPolicy {
    pub fn from_settings(s: &crate::configuration::Hl7Settings) -> SenderPolicy {
        SenderPolicy { sources: s.allowed_sources.clone(), senders: s.senders.clone() }
    }

    fn allows_source(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.sources.iter().any(|net| net.contains(&ip))
    }

    fn allows_sender(&self, header: &Header) -> bool {
        // Compared on the first component (the namespace id), as sites configure them.
        let first = |s: &str| s.split('^').next().unwrap_or_default().to_owned();
        self.senders.is_empty()
            || self
                .senders
                .iter()
                .any(|s| s.application == first(&header.sending_application) && s.facility == first(&header.sending_facility))
    }
}

/// SHA-256 of a message as a resend would repeat it: segments as they are, but `MSH-7` (the
/// time the message was sent, which some engines stamp again on every resend) left out.
pub fn content_digest(text: &str) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for segment in text.split(['\r', '\n']).filter(|s| !s.is_empty()) {
        match segment.strip_prefix("MSH").and_then(|rest| rest.chars().next()) {
            Some(sep) => {
                let fields: Vec<&str> = segment.split(sep).collect();
                for (i, f) in fields.iter().enumerate() {
                    // fields[6] is MSH-7: MSH-1 is the separator itself, so MSH-n is fields[n-1].
                    hash.update(if i == 6 { "" } else { f });
                    hash.update([0x1f]);
                }
            }
            None => hash.update(segment),
        }
        hash.update(b"\r");
    }
    hex::encode(hash.finalize())
}

/// Text of a message: UTF-8 when it is, else Latin-1 (the HL7 v2 default character set).
pub fn decode_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes.iter().map(|&b| b as char).collect(),
    }
}

/// Handles one framed message from `peer` and returns the ACK to send.
pub async fn handle_message(ctx: &IngestContext, peer: IpAddr, bytes: &[u8]) -> String {
    let text = decode_text(bytes);
    if !ctx.senders.allows_source(peer) {
        return refuse_source(ctx, peer, &text).await;
    }
    let msg = match parse_imaging_message(&text, &ctx.parse) {
        Ok(m) => m,
        Err(r) => return reject(ctx, r).await,
    };
    if !ctx.senders.allows_sender(&msg.header) {
        let r = unknown_sender(&msg.header, "sender-not-allowed", "the sending application and facility are not registered with radsight");
        return refuse_sender(ctx, peer, r).await;
    }
    let header = msg.header.clone();
    let work = StoreMessage { digest: content_digest(&text), msg, settings: ctx.settings.clone(), max_attempts: ctx.max_attempts };
    // In the audit log's group commit: messages arriving on several connections at once share
    // one durable write, and each ACK still waits for the commit that holds its message.
    match ctx.audit.offer_in_group(&ctx.db, work).await {
        Ok(Stored::Accepted { queued }) => {
            if queued {
                ctx.wake.notify_one();
            }
            build_ack(&header, AckCode::AA, None)
        }
        Ok(Stored::ControlIdReused) => {
            let text = "this control id was already used for a message with other content; nothing was stored";
            let r = rejection(&header, AckCode::AE, error_code::DUPLICATE_KEY, Some("MSH^1^10"), "control-id-reused", text);
            build_ack(&r.header, r.ack, Some(&r))
        }
        Ok(Stored::IdentityConflict) => {
            let text = "the Study Instance UID already belongs to another patient; nothing was stored";
            let r = rejection(&header, AckCode::AE, error_code::DUPLICATE_KEY, None, "identity-conflict", text);
            build_ack(&r.header, r.ack, Some(&r))
        }
        Err(AuditError::Busy) => {
            // Counted in the refusal tally by the audit log; the sender resends on AE.
            let text = "radsight is busy and stored nothing; send it again";
            let r = rejection(&header, AckCode::AE, error_code::INTERNAL, None, "write-queue-full", text);
            build_ack(&r.header, r.ack, Some(&r))
        }
        Err(e) => {
            tracing::error!(error = %e, "could not store an HL7 message; answered AE so that it is resent");
            let text = "radsight could not store the message; send it again";
            let r = rejection(&header, AckCode::AE, error_code::INTERNAL, None, "internal-error", text);
            build_ack(&r.header, r.ack, Some(&r))
        }
    }
}

/// The ACK for a message too large to read.
pub async fn handle_too_large(ctx: &IngestContext, peer: IpAddr, head: &[u8]) -> String {
    let head = decode_text(head);
    if !ctx.senders.allows_source(peer) {
        return refuse_source(ctx, peer, &head).await;
    }
    reject(ctx, reject_unreadable(&head, "too-large", "the message exceeds the size limit")).await
}

/// A message from an address outside `hl7.allowed_sources`: AR, read no further than its MSH.
async fn refuse_source(ctx: &IngestContext, peer: IpAddr, text: &str) -> String {
    let header = read_header(text).unwrap_or_default();
    let r = unknown_sender(&header, "source-not-allowed", "the sender's address is not allowed to send to radsight");
    refuse_sender(ctx, peer, r).await
}

/// A sender that is not allowed: AR. Table 0357 has no code for an unauthorised sender; 204
/// ("unknown key identifier") names what failed, the key that identifies the sender.
fn unknown_sender(header: &Header, reason: &'static str, text: &'static str) -> Rejection {
    rejection(header, AckCode::AR, error_code::UNKNOWN_KEY, Some("MSH^1^3"), reason, text)
}

/// Refuses a sender that is not allowed, audited through the refusal tally (a stranger can send
/// as often as it likes).
async fn refuse_sender(ctx: &IngestContext, peer: IpAddr, r: Rejection) -> String {
    let event = AuditEvent::new(Action::Hl7Message, Outcome::Rejected)
        .actor(Some(&crate::audit::bounded(&r.header.sender())), None)
        .detail("ack", r.ack.as_str())
        .detail("reason", r.reason)
        .detail("error_code", r.error_code);
    if let Err(e) = ctx.audit.record_refusal(&ctx.db, "hl7", peer, r.reason, event).await {
        tracing::error!(error = %e, "could not audit a refused HL7 sender");
    }
    build_ack(&r.header, r.ack, Some(&r))
}

async fn reject(ctx: &IngestContext, r: Rejection) -> String {
    let mut event = AuditEvent::new(Action::Hl7Message, Outcome::Rejected)
        .actor(Some(&crate::audit::bounded(&r.header.sender())), None)
        .detail("ack", r.ack.as_str())
        .detail("reason", r.reason)
        .detail("error_code", r.error_code)
        .detail("message_type", r.header.message_type.clone());
    if let Some(c) = &r.header.control_id {
        event = event.entity("Hl7Message", c.as_str());
    }
    if let Err(e) = ctx.audit.record(&ctx.db, event).await {
        tracing::error!(error = %e, "could not audit a rejected HL7 message");
    }
    build_ack(&r.header, r.ack, Some(&r))
}

/// What storing a message did.
enum Stored {
    /// Stored (or a resend recognised); whether a new job was queued.
    Accepted { queued: bool },
    /// The control id was used before for other content: nothing stored, only audited.
    ControlIdReused,
    /// The study it names belongs to another patient: only the `identity.conflict` entry was
    /// written, so a corrected message with the same control id is still taken.
    IdentityConflict,
}

/// A message to store: its effects and its audit entries, atomically, in a group commit.
struct StoreMessage {
    msg: ImagingMessage,
    digest: String,
    settings: Arc<crate::configuration::Settings>,
    max_attempts: i32,
}

impl GroupWork for StoreMessage {
    type Output = Stored;
    fn run<'t>(self: Box<Self>, w: &'t mut GroupWriter<'_>) -> BoxFuture<'t, Result<Stored, AuditError>> {
        Box::pin(async move { store(w, &self.msg, &self.digest, &self.settings, self.max_attempts).await })
    }
}

/// Stores the message's effects and appends its audit entries through `w`.
async fn store(
    w: &mut GroupWriter<'_>,
    msg: &ImagingMessage,
    digest: &str,
    settings: &crate::configuration::Settings,
    max_attempts: i32,
) -> Result<Stored, AuditError> {
    let sender = crate::audit::bounded(&msg.header.sender());
    let base = AuditEvent::new(Action::Hl7Message, Outcome::Success)
        .actor(Some(&sender), None)
        .patient(Some(msg.patient.reference()))
        .entity("Hl7Message", msg.control_id.as_str())
        .detail("message_type", msg.header.message_type.clone())
        .detail("ack", "AA");
    let seen = hl7_message::Entity::find_by_id((sender.clone(), msg.control_id.as_str().to_owned())).one(w.conn()).await?;
    if let Some(seen) = seen {
        if seen.content_sha256.as_deref().is_some_and(|d| d != digest) {
            let event = AuditEvent::new(Action::Hl7Message, Outcome::Rejected)
                .actor(Some(&sender), None)
                .patient(Some(msg.patient.reference()))
                .entity("Hl7Message", msg.control_id.as_str())
                .detail("message_type", msg.header.message_type.clone())
                .detail("ack", "AE")
                .detail("reason", "control-id-reused")
                .detail("content_sha256", digest.to_owned())
                .detail("first_content_sha256", seen.content_sha256.clone().unwrap_or_default());
            w.append(event).await?;
            return Ok(Stored::ControlIdReused);
        }
        let mut event = base.detail("duplicate", true);
        if let Some(job) = seen.job_id {
            event = event.entity("Job", job);
        }
        w.append(event).await?;
        return Ok(Stored::Accepted { queued: false });
    }
    let namespace = settings.namespace_of_hl7(&msg.patient_authority);
    if let Some(uid) = &msg.study_uid
        && let Some(owner) = conflicting_owner(w.conn(), uid, &namespace, &msg.patient).await?
    {
        // Patient identity is never merged by a study UID: refuse, and tell the auditors.
        let event = AuditEvent::new(Action::IdentityConflict, Outcome::Rejected)
            .actor(Some(&sender), None)
            .patient(Some(msg.patient.reference()))
            .entity("Hl7Message", msg.control_id.as_str())
            .entity("ImagingStudy", uid.as_str())
            .detail("reason", "study-belongs-to-another-patient");
        let event = owner.describe(event);
        w.append(event).await?;
        return Ok(Stored::IdentityConflict);
    }

    if msg.kind == MessageKind::Order || msg.study_uid.is_some() {
        upsert_order(w.conn(), msg, &namespace).await?;
    }
    let mut event = base.detail("duplicate", false).detail("order_control", msg.order_control.clone());
    if let Some(status) = &msg.result_status {
        event = event.detail("result_status", status.clone());
    }
    let mut job = None;
    // A result that is not final, and a cancellation, name no study worth storing.
    let announce = msg.study_uid.is_some() && (msg.kind == MessageKind::Order || msg.is_final_result()) && !msg.is_cancellation();
    if let (true, Some(uid)) = (announce, &msg.study_uid) {
        let study = AnnouncedStudy {
            study_uid: uid.clone(),
            patient: msg.patient.clone(),
            namespace: namespace.clone(),
            accession: msg.accession.clone(),
            modality: msg.modality.clone(),
            procedure_code: msg.procedure.as_ref().map(|p| format!("{}|{}", p.system.as_deref().unwrap_or(""), p.code)),
            description: msg.procedure.as_ref().and_then(|p| p.display.clone()),
            started_at: None,
            endpoint: None,
            source: JobSource::Hl7,
        };
        event = event.entity("ImagingStudy", uid.as_str());
        job = announce_study(w.conn(), &study, msg.wants_analysis(), max_attempts).await?;
    }
    if let Some(j) = &job {
        event = event.entity("Job", j.id.clone());
    }
    w.append(event).await?;
    if let (Some(j), Some(uid)) = (&job, &msg.study_uid)
        && j.created
    {
        w.append(
            AuditEvent::new(Action::JobQueued, Outcome::Success)
                .patient(Some(msg.patient.reference()))
                .entity("Job", j.id.clone())
                .entity("ImagingStudy", uid.as_str())
                .detail("source", "hl7"),
        )
        .await?;
    }
    hl7_message::Entity::insert(hl7_message::ActiveModel {
        sender: Set(sender),
        control_id: Set(msg.control_id.as_str().to_owned()),
        message_type: Set(msg.header.message_type.clone()),
        ack_code: Set("AA".into()),
        job_id: Set(job.as_ref().map(|j| j.id.clone())),
        received_at: Set(time::OffsetDateTime::now_utc().unix_timestamp()),
        content_sha256: Set(Some(digest.to_owned())),
    })
    .exec_without_returning(w.conn())
    .await?;
    Ok(Stored::Accepted { queued: job.is_some_and(|j| j.created) })
}

/// Stores the order, or updates the one with the same placer or filler order number.
async fn upsert_order<C: ConnectionTrait>(conn: &C, msg: &ImagingMessage, namespace: &PatientNamespace) -> Result<(), DbErr> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let patient_ref = msg.patient.reference();
    let mut existing = None;
    for (column, value) in
        [(imaging_order::Column::PlacerOrder, &msg.placer_order), (imaging_order::Column::FillerOrder, &msg.filler_order)]
    {
        if let Some(v) = value
            && existing.is_none()
        {
            existing = imaging_order::Entity::find()
                .filter(imaging_order::Column::PatientRef.eq(patient_ref.as_str()))
                .filter(imaging_order::Column::PatientNamespace.eq(namespace.as_str()))
                .filter(column.eq(v.as_str()))
                .one(conn)
                .await?;
        }
    }
    let procedure_code = msg.procedure.as_ref().map(|p| format!("{}|{}", p.system.as_deref().unwrap_or(""), p.code));
    let mut row = imaging_order::ActiveModel {
        patient_ref: Set(patient_ref.clone()),
        patient_namespace: Set(Some(namespace.as_str().to_owned())),
        placer_order: Set(msg.placer_order.clone()),
        filler_order: Set(msg.filler_order.clone()),
        accession: Set(msg.accession.clone()),
        procedure_code: Set(procedure_code),
        procedure_display: Set(msg.procedure.as_ref().and_then(|p| p.display.clone())),
        order_control: Set(msg.order_control.clone()),
        result_status: Set(msg.result_status.clone()),
        study_uid: Set(msg.study_uid.as_ref().map(|u| u.as_str().to_owned())),
        modality: Set(msg.modality.clone()),
        last_control_id: Set(msg.control_id.as_str().to_owned()),
        updated_at: Set(now),
        ..Default::default()
    };
    match existing {
        Some(found) => {
            // A later message keeps what it does not restate.
            row.id = Set(found.id);
            if msg.study_uid.is_none() {
                row.study_uid = Set(found.study_uid);
            }
            if msg.accession.is_none() {
                row.accession = Set(found.accession);
            }
            if msg.modality.is_none() {
                row.modality = Set(found.modality);
            }
            if msg.kind == MessageKind::Result {
                row.order_control = Set(found.order_control);
            }
            row.created_at = Set(found.created_at);
            imaging_order::Entity::update(row).exec(conn).await?;
        }
        None => {
            row.created_at = Set(now);
            imaging_order::Entity::insert(row).exec_without_returning(conn).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORU: &str = "MSH|^~\\&|RIS|GENERAL|RADSIGHT|HOSP|20261203101500||ORU^R01|C1|P|2.5.1\rPID|1||123^^^HOSP^MR\rOBR|1|P1|F1";

    #[test]
    fn a_resend_with_a_new_send_time_has_the_same_digest_and_other_content_does_not() {
        let resent = ORU.replace("20261203101500", "20261203101730");
        assert_eq!(content_digest(ORU), content_digest(&resent));
        assert_eq!(content_digest(ORU), content_digest(&format!("{}\r\n", ORU.replace('\r', "\n"))), "line endings are framing");
        assert_ne!(content_digest(ORU), content_digest(&ORU.replace("123^", "124^")));
        assert_ne!(content_digest(ORU), content_digest(&ORU.replace("ORU^R01", "ORM^O01")));
    }

    #[test]
    fn senders_are_matched_by_address_range_and_first_components() {
        let policy = SenderPolicy {
            sources: vec!["10.1.0.0/16".parse().unwrap(), "::1/128".parse().unwrap()],
            senders: vec![crate::configuration::Hl7Sender { application: "RIS".into(), facility: "GENERAL".into() }],
        };
        assert!(policy.allows_source("10.1.200.3".parse().unwrap()));
        assert!(policy.allows_source("::ffff:10.1.0.9".parse().unwrap()), "an IPv4-mapped address is its IPv4");
        assert!(!policy.allows_source("10.2.0.1".parse().unwrap()));
        let header = |app: &str, fac: &str| Header { sending_application: app.into(), sending_facility: fac.into(), ..Header::default() };
        assert!(policy.allows_sender(&header("RIS^1.2.3^ISO", "GENERAL")));
        assert!(!policy.allows_sender(&header("RIS", "OTHER")));
        assert!(SenderPolicy { senders: vec![], ..policy }.allows_sender(&header("ANY", "ONE")));
    }
}
