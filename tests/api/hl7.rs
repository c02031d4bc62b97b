//! The HL7 v2 MLLP listener, through a real TCP client: ACK fields, AA only after the order,
//! study and job are stored, AE/AR with an ERR segment on bad input with the connection kept
//! up, concurrency, and duplicate control ids.

use futures_util::future::join_all;
use radsight::store::entities::{hl7_message, imaging_order, study};
use sea_orm::EntityTrait;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, PATIENT, TestApp, example, spawn_app, spawn_app_with};

/// A minimal MLLP client.
pub struct MllpClient {
    stream: TcpStream,
    pending: Vec<u8>,
}

/// A received ACK, split into fields.
#[derive(Debug)]
pub struct Ack(pub String);

impl Ack {
    /// Field `n` of the first `segment`, numbered as HL7 does (MSH-1 is the separator).
    pub fn field(&self, segment: &str, n: usize) -> String {
        let seg = self.0.split('\r').find(|s| s.starts_with(segment)).unwrap_or_else(|| panic!("no {segment} segment in {:?}", self.0));
        let fields: Vec<&str> = seg.split('|').collect();
        let i = if segment == "MSH" { n - 1 } else { n };
        fields.get(i).copied().unwrap_or("").to_owned()
    }

    pub fn code(&self) -> String {
        self.field("MSA", 1)
    }

    pub fn has(&self, segment: &str) -> bool {
        self.0.split('\r').any(|s| s.starts_with(segment))
    }
}

impl MllpClient {
    pub async fn connect(app: &TestApp) -> MllpClient {
        MllpClient::connect_to(app.hl7_port).await
    }

    /// A client of the MLLP listener on `port` (a `radsight serve` process's, say).
    pub async fn connect_to(port: u16) -> MllpClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect to the MLLP listener");
        MllpClient { stream, pending: Vec::new() }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    pub async fn send(&mut self, message: &str) -> Ack {
        let mut framed = vec![0x0b];
        framed.extend_from_slice(message.as_bytes());
        framed.extend_from_slice(&[0x1c, 0x0d]);
        self.send_raw(&framed).await;
        self.read_ack().await
    }

    /// Sends a message and reads its ACK; `None` when the connection fails or closes first.
    pub async fn try_send(&mut self, message: &str) -> Option<Ack> {
        let mut framed = vec![0x0b];
        framed.extend_from_slice(message.as_bytes());
        framed.extend_from_slice(&[0x1c, 0x0d]);
        self.stream.write_all(&framed).await.ok()?;
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == [0x1c, 0x0d]) {
                let frame: Vec<u8> = self.pending.drain(..end + 2).collect();
                let start = frame.iter().position(|b| *b == 0x0b)?;
                return String::from_utf8(frame[start + 1..frame.len() - 2].to_vec()).ok().map(Ack);
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(std::time::Duration::from_secs(15), self.stream.read(&mut buf)).await.ok()?.ok()?;
            if n == 0 {
                return None;
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    pub async fn read_ack(&mut self) -> Ack {
        let deadline = std::time::Duration::from_secs(15);
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == [0x1c, 0x0d]) {
                let frame: Vec<u8> = self.pending.drain(..end + 2).collect();
                let start = frame.iter().position(|b| *b == 0x0b).expect("a start byte before the ACK");
                return Ack(String::from_utf8(frame[start + 1..frame.len() - 2].to_vec()).unwrap());
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(deadline, self.stream.read(&mut buf)).await.expect("an ACK in time").unwrap();
            assert!(n > 0, "the listener closed the connection");
            self.pending.extend_from_slice(&buf[..n]);
        }
    }
}

/// An OMI^O23 for `patient` naming study `uid`, with control id `control`.
pub fn omi(control: &str, patient: &str, uid: &str) -> String {
    format!(
        "MSH|^~\\&|RIS|HOSP|RADSIGHT|AI|20261129101500||OMI^O23^OMI_O23|{control}|P|2.5.1\r\
PID|1||{patient}^^^HOSP^MR||Doe^Jane||19700101|F\r\
ORC|NW|PLC-{control}|FIL-{control}||SC\r\
TQ1|1\r\
OBR|1|PLC-{control}|FIL-{control}|71260^CT CHEST W CONTRAST^CPT||||||||||||||ACC-{control}||||||CT\r\
IPC|ACC-{control}|RP1|{uid}|SPS1|CT\r"
    )
}

/// An ORU^R01 final result for `patient` whose OBX carries Study Instance UID `uid`.
pub fn oru(control: &str, patient: &str, uid: &str, status: &str) -> String {
    format!(
        "MSH|^~\\&|RIS|HOSP|RADSIGHT|AI|20261129120000||ORU^R01|{control}|P|2.3\r\
PID|1||{patient}||Roe^Richard\r\
OBR|1|PLC-{control}|FIL-{control}|71250^CT CHEST^CPT||||||||||||||ACC-{control}||||||CT|{status}\r\
OBX|1|ST|110180^Study Instance UID^DCM||{uid}||||||F\r"
    )
}

fn audit_detail(e: &radsight::store::entities::audit_entry::Model) -> Value {
    serde_json::from_str(&e.detail).unwrap()
}

async fn an_order_is_acknowledged_after_its_order_study_and_job_are_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = MllpClient::connect(&app).await;
    let ack = client.send(&omi("MSG0001", "MRN123", "1.2.826.0.1.1")).await;

    assert_eq!(ack.code(), "AA", "{ack:?}");
    assert_eq!(ack.field("MSA", 2), "MSG0001");
    assert_eq!((ack.field("MSH", 3), ack.field("MSH", 4)), ("RADSIGHT".into(), "AI".into()), "sender and receiver are swapped");
    assert_eq!((ack.field("MSH", 5), ack.field("MSH", 6)), ("RIS".into(), "HOSP".into()));
    assert_eq!(ack.field("MSH", 9), "ACK^O23^ACK");
    assert_eq!(ack.field("MSH", 12), "2.5.1");
    assert!(!ack.has("ERR"));

    // Everything is committed by the time the AA arrives.
    let orders = imaging_order::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(orders.len(), 1);
    let o = &orders[0];
    assert_eq!(
        (o.patient_ref.as_str(), o.placer_order.as_deref(), o.filler_order.as_deref()),
        ("Patient/MRN123", Some("PLC-MSG0001"), Some("FIL-MSG0001"))
    );
    assert_eq!(
        (o.accession.as_deref(), o.procedure_code.as_deref(), o.order_control.as_str()),
        (Some("ACC-MSG0001"), Some("CPT|71260"), "NW")
    );
    let s = study::Entity::find_by_id("1.2.826.0.1.1".to_owned()).one(&app.db).await.unwrap().expect("the study is stored");
    assert_eq!((s.patient_ref.as_str(), s.modality.as_str(), s.accession.as_deref()), ("Patient/MRN123", "CT", Some("ACC-MSG0001")));
    let jobs = app.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!((jobs[0].study_uid.as_str(), jobs[0].source.as_str()), ("1.2.826.0.1.1", "hl7"));

    let received = app.audit_of("hl7.message").await;
    assert_eq!(received.len(), 1);
    assert_eq!((received[0].outcome.as_str(), received[0].patient_ref.as_deref()), ("success", Some("Patient/MRN123")));
    assert!(received[0].entities.contains(&jobs[0].id));
    assert_eq!(app.audit_of("job.queued").await.len(), 1);
    // No PHI from the message anywhere in the trail.
    assert!(app.audit().await.iter().all(|e| !e.detail.contains("Doe") && !e.entities.contains("Doe")));
}

async fn a_final_result_for_a_new_study_shows_as_pending_in_the_patient_view_hook(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = MllpClient::connect(&app).await;
    // A preliminary result stores nothing to analyse.
    assert_eq!(client.send(&oru("R-1", PATIENT, "1.2.826.0.1.2", "P")).await.code(), "AA");
    assert!(app.jobs().await.is_empty());
    assert!(study::Entity::find().all(&app.db).await.unwrap().is_empty());
    let ack = client.send(&oru("R-2", PATIENT, "1.2.826.0.1.2", "F")).await;
    assert_eq!((ack.code(), ack.field("MSA", 2), ack.field("MSH", 9)), ("AA".into(), "R-2".into(), "ACK^R01^ACK".into()));
    assert_eq!(app.jobs().await.len(), 1);

    let cards = app.hook("radsight-patient-view", &example("patient-view")).await.cards();
    assert!(
        cards.iter().any(|c| c["summary"].as_str().unwrap().contains("pending")),
        "the new study's analysis shows as pending: {cards:#?}"
    );
    // The job runs to its current last step; nothing pretends to be a model result.
    let jobs = app.wait_for_jobs("the job to finish", |j| j.iter().all(|j| j.state == "succeeded")).await;
    assert_eq!(jobs[0].stage.as_deref(), Some("fetch-pending"));
    assert_eq!(app.audit_of("job.started").await.len(), 1);
    assert_eq!(app.audit_of("job.succeeded").await.len(), 1);
}

async fn many_messages_on_one_connection_and_several_connections_at_once_are_each_acknowledged(backend: Backend) {
    let app = spawn_app(backend).await;
    let connections = (0..4).map(|c| {
        let app = &app;
        async move {
            let mut client = MllpClient::connect(app).await;
            for m in 0..5 {
                let control = format!("C{c}M{m}");
                let ack = client.send(&omi(&control, &format!("P{c}"), &format!("1.2.826.0.2.{c}.{m}"))).await;
                assert_eq!((ack.code(), ack.field("MSA", 2)), ("AA".into(), control));
            }
        }
    });
    join_all(connections).await;
    // Messages sent back to back in one write are each answered, in order.
    let mut client = MllpClient::connect(&app).await;
    let mut burst = Vec::new();
    for m in 0..3 {
        burst.extend_from_slice(&[0x0b]);
        burst.extend_from_slice(omi(&format!("B{m}"), "PB", &format!("1.2.826.0.3.{m}")).as_bytes());
        burst.extend_from_slice(&[0x1c, 0x0d]);
    }
    client.send_raw(&burst).await;
    for m in 0..3 {
        assert_eq!(client.read_ack().await.field("MSA", 2), format!("B{m}"));
    }
    assert_eq!(app.jobs().await.len(), 23);
    assert_eq!(hl7_message::Entity::find().all(&app.db).await.unwrap().len(), 23);
}

async fn malformed_messages_get_ae_or_ar_with_an_err_segment_and_the_connection_stays_up(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.hl7.max_message_bytes = 4096).await;
    let mut client = MllpClient::connect(&app).await;

    let no_patient = omi("BAD1", "MRN123", "1.2.3").replace("MRN123^^^HOSP^MR", "");
    let ack = client.send(&no_patient).await;
    assert_eq!((ack.code(), ack.field("MSA", 2)), ("AE".into(), "BAD1".into()));
    assert_eq!(ack.field("ERR", 2), "PID^1^3");
    assert!(ack.field("ERR", 3).starts_with("101^"), "{ack:?}");
    assert!(ack.field("ERR", 8).contains("PID-3"));

    let bad_uid = omi("BAD2", "MRN123", "1.2.x");
    let ack = client.send(&bad_uid).await;
    assert_eq!((ack.code(), ack.field("ERR", 3).split('^').next().unwrap().to_owned()), ("AE".into(), "102".into()));

    let adt = omi("BAD3", "MRN123", "1.2.3").replace("OMI^O23^OMI_O23", "ADT^A01");
    let ack = client.send(&adt).await;
    assert_eq!((ack.code(), ack.field("MSA", 2)), ("AR".into(), "BAD3".into()));
    assert!(ack.field("ERR", 3).starts_with("200^"));

    let ack = client.send("this is not HL7").await;
    assert_eq!((ack.code(), ack.field("MSA", 2)), ("AR".into(), String::new()));
    assert!(ack.has("ERR"));

    let huge = format!("{}NTE|1||{}\r", omi("BIG1", "MRN123", "1.2.3"), "x".repeat(10_000));
    let ack = client.send(&huge).await;
    assert_eq!((ack.code(), ack.field("MSA", 2)), ("AR".into(), "BIG1".into()));

    // The same connection still works.
    let ack = client.send(&omi("GOOD1", "MRN123", "1.2.826.0.4")).await;
    assert_eq!((ack.code(), ack.field("MSA", 2)), ("AA".into(), "GOOD1".into()));
    assert_eq!(app.jobs().await.len(), 1, "only the good message queued a job");

    let outcomes: Vec<(String, String)> = app
        .audit_of("hl7.message")
        .await
        .iter()
        .map(|e| (e.outcome.clone(), audit_detail(e)["reason"].as_str().unwrap_or("-").to_owned()))
        .collect();
    let expected = [
        ("rejected", "missing-patient-id"),
        ("rejected", "bad-study-uid"),
        ("rejected", "unsupported-message-type"),
        ("rejected", "no-msh"),
        ("rejected", "too-large"),
        ("success", "-"),
    ];
    assert_eq!(outcomes, expected.map(|(a, b)| (a.to_owned(), b.to_owned())).to_vec());
}

async fn a_resent_control_id_is_acknowledged_again_without_a_second_job(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = MllpClient::connect(&app).await;
    let message = omi("DUP1", "MRN123", "1.2.826.0.5");
    assert_eq!(client.send(&message).await.code(), "AA");
    // Let the first job finish, so that only the control-id check can stop a second job.
    app.wait_for_jobs("the first job to finish", |j| j.len() == 1 && j[0].state == "succeeded").await;

    let again = client.send(&message).await;
    assert_eq!((again.code(), again.field("MSA", 2)), ("AA".into(), "DUP1".into()));
    // Another connection resending it gets the same answer.
    let mut other = MllpClient::connect(&app).await;
    assert_eq!(other.send(&message).await.code(), "AA");

    assert_eq!(app.jobs().await.len(), 1, "a resend must not create a second job");
    assert_eq!(imaging_order::Entity::find().all(&app.db).await.unwrap().len(), 1);
    let duplicates: Vec<bool> = app.audit_of("hl7.message").await.iter().map(|e| audit_detail(e)["duplicate"].as_bool().unwrap()).collect();
    assert_eq!(duplicates, [false, true, true]);
    // A different control id for the same study after the job finished does queue new work.
    assert_eq!(client.send(&omi("DUP2", "MRN123", "1.2.826.0.5")).await.code(), "AA");
    assert_eq!(app.jobs().await.len(), 2);
}

/// Sends `message` on fresh connections until one is served (a closed connection frees its slot
/// just after the socket closes), and checks it gets AA; fails after 5 s.
async fn accepted_once_a_slot_frees(app: &TestApp, message: &str, control: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let mut stream = TcpStream::connect(("127.0.0.1", app.hl7_port)).await.unwrap();
        let mut framed = vec![0x0b];
        framed.extend_from_slice(message.as_bytes());
        framed.extend_from_slice(&[0x1c, 0x0d]);
        let _ = stream.write_all(&framed).await;
        let mut reply = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut reply)).await
            && n > 0
        {
            assert!(String::from_utf8_lossy(&reply[..n]).contains(&format!("MSA|AA|{control}")));
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no slot was freed for {control}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn idle_connections_are_closed_and_the_connection_limit_holds(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.hl7.read_timeout_ms = 300;
        s.hl7.max_connections = 1;
    })
    .await;
    let mut first = MllpClient::connect(&app).await;
    assert_eq!(first.send(&omi("L1", "MRN1", "1.2.826.0.6.1")).await.code(), "AA");
    // A second connection while the first is open is closed at once.
    let mut second = TcpStream::connect(("127.0.0.1", app.hl7_port)).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), second.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "the second connection must be closed: {n:?}");
    // The first, once idle past the read timeout, is closed too...
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), first.stream.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "the idle connection must be closed: {n:?}");
    // ...which frees its slot (released just after the socket closes, so allow a moment).
    accepted_once_a_slot_frees(&app, &omi("L2", "MRN1", "1.2.826.0.6.2"), "L2").await;
}

async fn a_message_that_trickles_in_is_cut_off_at_its_deadline_and_frees_the_slot(backend: Backend) {
    // The idle timeout alone restarts on every byte: a sender dripping bytes held a slot
    // forever. The message deadline counts from the message's first byte.
    let app = spawn_app_with(backend, |s| {
        s.hl7.message_deadline_ms = 400;
        s.hl7.max_connections = 1;
    })
    .await;
    let mut slow = TcpStream::connect(("127.0.0.1", app.hl7_port)).await.unwrap();
    let message = omi("SLOW1", "MRN1", "1.2.826.0.6.9");
    let mut framed = vec![0x0b];
    framed.extend_from_slice(message.as_bytes());
    let mut cut_off = false;
    for b in framed.iter().take(60) {
        if slow.write_all(&[*b]).await.is_err() {
            cut_off = true;
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(std::time::Duration::from_millis(100), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut_off = true;
                break;
            }
            Ok(Ok(n)) => panic!("no ACK is owed for half a message: {:?}", &buf[..n]),
            Err(_) => {} // still open: drip the next byte
        }
    }
    assert!(cut_off, "60 bytes over 6 s kept the connection open past a 0.4 s message deadline");
    // The slot is free again for a sender that sends whole messages.
    accepted_once_a_slot_frees(&app, &omi("SLOW2", "MRN1", "1.2.826.0.6.10"), "SLOW2").await;
    assert!(
        hl7_message::Entity::find().all(&app.db).await.unwrap().iter().all(|m| m.control_id != "SLOW1"),
        "half a message is never stored"
    );
}

async fn one_source_cannot_take_every_connection(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.hl7.max_connections_per_source = 2).await;
    let mut first = MllpClient::connect(&app).await;
    let mut second = MllpClient::connect(&app).await;
    assert_eq!(first.send(&omi("PS1", "MRN1", "1.2.826.0.6.11")).await.code(), "AA");
    assert_eq!(second.send(&omi("PS2", "MRN1", "1.2.826.0.6.12")).await.code(), "AA");
    let mut third = TcpStream::connect(("127.0.0.1", app.hl7_port)).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), third.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "a third connection from the same address must be closed: {n:?}");
    // Closing one frees a place for that source.
    drop(first);
    accepted_once_a_slot_frees(&app, &omi("PS3", "MRN1", "1.2.826.0.6.13"), "PS3").await;
}

async fn a_result_naming_another_patients_study_is_refused_and_audited(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = MllpClient::connect(&app).await;
    assert_eq!(client.send(&oru("ID1", "MRN-A", "1.2.826.0.8.1", "F")).await.code(), "AA");
    let jobs = app.jobs().await.len();
    let ack = client.send(&oru("ID2", "MRN-B", "1.2.826.0.8.1", "F")).await;
    assert_eq!(ack.code(), "AE", "{}", ack.0);
    assert!(ack.has("ERR"));
    assert_eq!(app.jobs().await.len(), jobs, "no job for a study claimed by another patient");
    let studies = study::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(studies.len(), 1);
    assert_eq!(studies[0].patient_ref, "Patient/MRN-A", "the study keeps its patient");
    let entry = app.audit().await.into_iter().rev().find(|e| e.action == "identity.conflict").expect("an identity.conflict entry");
    assert_eq!(entry.outcome, "rejected");
    assert_eq!(audit_detail(&entry)["study_patient"], "Patient/MRN-A");
    // A corrected resend under the same control id (the right patient) is taken.
    assert_eq!(client.send(&oru("ID2", "MRN-A", "1.2.826.0.8.1", "F")).await.code(), "AA");
}

async fn a_nul_byte_is_rejected_for_good_not_asked_again(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = MllpClient::connect(&app).await;
    let ack = client.send(&omi("NUL1", "MRN1", "1.2.826.0.8.2").replace("Doe^Jane", "Do\0e^Jane")).await;
    assert_eq!(ack.code(), "AR", "{}", ack.0);
    assert!(!ack.0.contains('\0'));
    assert!(app.jobs().await.is_empty());
    // The connection is still usable.
    assert_eq!(client.send(&omi("NUL2", "MRN1", "1.2.826.0.8.2")).await.code(), "AA");
}

backend_tests!(
    a_result_naming_another_patients_study_is_refused_and_audited,
    a_nul_byte_is_rejected_for_good_not_asked_again,
    a_message_that_trickles_in_is_cut_off_at_its_deadline_and_frees_the_slot,
    one_source_cannot_take_every_connection,
    idle_connections_are_closed_and_the_connection_limit_holds,
    an_order_is_acknowledged_after_its_order_study_and_job_are_stored,
    a_final_result_for_a_new_study_shows_as_pending_in_the_patient_view_hook,
    many_messages_on_one_connection_and_several_connections_at_once_are_each_acknowledged,
    malformed_messages_get_ae_or_ar_with_an_err_segment_and_the_connection_stays_up,
    a_resent_control_id_is_acknowledged_again_without_a_second_job,
);
