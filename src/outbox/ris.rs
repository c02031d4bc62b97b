//! The result to the RIS: an HL7 v2.5.1 ORU^R01 (written by `radsight-hl7-report`) sent over
//! MLLP (over TLS when `tls` is configured), delivered only when the receiver acknowledges it
//! with AA (or CA).
//!
//! The message is built once, with a control id (MSH-10) derived from the delivery, and kept:
//! every retry sends the same message with the same control id, so a receiver that already
//! processed it (its ACK was lost) can recognise the duplicate, as HL7's original
//! acknowledgement mode expects. AE, AR, an ACK for another message, no ACK in time and a
//! refused connection are all retried with backoff, then `dead`.

use std::time::Duration;

use radsight_hl7_report as oru;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::build::{BuildContext, BuildError, Reportable, reportable};
use super::deliver::Failure;
use crate::configuration::RisDestination;
use crate::mllp::{Deframer, Frame, frame};
use crate::results::store::{conclusion, findings};
use crate::store::entities::imaging_order;

/// An ACK is a few hundred bytes; a longer answer is not one.
const MAX_ACK_BYTES: usize = 64 * 1024;

/// The message control id of a delivery: 20 characters (MSH-10's length in v2.5.1), unique per
/// delivery and the same for all its attempts.
pub fn control_id(delivery_id: &str) -> String {
    let digest = sha2::Sha256::digest(delivery_id.as_bytes());
    format!("RS{}", &hex::encode(digest)[..18]).to_uppercase()
}

/// Builds the ORU^R01 of result `result_id` for `ris`: (control id, message bytes).
pub async fn build(
    ctx: &BuildContext<'_>,
    ris: &RisDestination,
    delivery_id: &str,
    result_id: &str,
) -> Result<(String, Vec<u8>), BuildError> {
    let Reportable { result, study, receipt } = reportable(ctx, result_id).await?;
    let order = imaging_order::Entity::find()
        .filter(imaging_order::Column::StudyUid.eq(study.study_uid.as_str()))
        .filter(imaging_order::Column::PatientRef.eq(study.patient_ref.as_str()))
        .order_by_desc(imaging_order::Column::UpdatedAt)
        .one(ctx.db)
        .await
        .map_err(BuildError::Read)?;
    let (Some(model_id), Some(version), Some(weights)) =
        (result.model_id.clone(), result.model_version.clone(), result.weights_sha256.clone())
    else {
        return Err(BuildError::NotReportable);
    };
    let control = control_id(delivery_id);
    let found = findings(&result);
    let conclusion = conclusion(&found, &model_id, &version);
    let procedure = order.as_ref().and_then(|o| {
        let (system, code) = o.procedure_code.as_deref()?.split_once('|')?;
        Some(oru::Code { code: code.to_owned(), display: o.procedure_display.clone().unwrap_or_default(), system: system.to_owned() })
    });
    let message = oru::OruResult {
        header: oru::Header {
            sending_application: ris.sending_application.clone(),
            sending_facility: ris.sending_facility.clone(),
            receiving_application: ris.receiving_application.clone(),
            receiving_facility: ris.receiving_facility.clone(),
            message_control_id: control.clone(),
            created_at_unix: time::OffsetDateTime::now_utc().unix_timestamp(),
            processing_id: "P".into(),
        },
        patient: oru::Patient {
            id: study.patient_ref.strip_prefix("Patient/").unwrap_or(&study.patient_ref).to_owned(),
            assigning_authority: (!ris.assigning_authority.is_empty()).then(|| ris.assigning_authority.clone()),
            name: None,
        },
        order: oru::Order {
            placer_order_number: order.as_ref().and_then(|o| o.placer_order.clone()),
            filler_order_number: order.as_ref().and_then(|o| o.filler_order.clone()),
            accession_number: study.accession.clone().or_else(|| order.as_ref().and_then(|o| o.accession.clone())),
            study_instance_uid: study.study_uid.clone(),
            procedure,
            observed_at_unix: result.created_at,
            result_status: oru::ResultStatus::Final,
        },
        findings: found
            .iter()
            .map(|f| oru::Finding {
                // The card's SNOMED CT or LOINC code when it gives one, else radsight's own label.
                code: match f.standard.as_ref().and_then(|c| c.hl7_system().map(|system| (c, system))) {
                    Some((c, system)) => oru::Code { code: c.code.clone(), display: c.display.clone(), system: system.into() },
                    None => oru::Code { code: f.code.clone(), display: f.display.clone(), system: "99RADSIGHT".into() },
                },
                probability: f.probability,
                threshold: f.threshold,
                positive: f.is_positive(),
            })
            .collect(),
        conclusion,
        model: oru::ModelIdentity { id: model_id, version, weights_sha256_hex: weights },
        result_url: Some(format!("{}/results/{}", ctx.public_url, result.id)),
        receipt_json: Some(serde_json::to_string(&receipt).expect("a receipt serialises")),
    };
    let text = oru::write_oru_r01(&message)?;
    Ok((control, text.into_bytes()))
}

/// Sends the message to `ris` over MLLP (over TLS when configured) and waits for its ACK.
pub async fn send(ris: &RisDestination, control: &str, message: &[u8]) -> Result<(), Failure> {
    let timeout = Duration::from_millis(ris.ack_timeout_ms);
    let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&ris.address))
        .await
        .map_err(|_| Failure::new("ris-unreachable", false).with_detail("connection timed out".into()))?
        .map_err(|e| Failure::new("ris-unreachable", false).with_detail(e.kind().to_string()))?;
    let ack = match &ris.tls {
        None => exchange(tcp, message, ris.ack_timeout_ms).await?,
        Some(tls) => {
            // A configuration that cannot be read will not read better later.
            let connector =
                crate::mllp::tls::connector(tls).map_err(|e| Failure::new("ris-tls-misconfigured", true).with_detail(format!("{e:#}")))?;
            let host = ris.address.rsplit_once(':').map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']')).unwrap_or_default();
            let name = if tls.server_name.is_empty() { host } else { tls.server_name.as_str() };
            let name = rustls::pki_types::ServerName::try_from(name.to_owned())
                .map_err(|_| Failure::new("ris-tls-misconfigured", true).with_detail(format!("{name:?} is not a server name")))?;
            let stream = tokio::time::timeout(timeout, connector.connect(name, tcp))
                .await
                .map_err(|_| Failure::new("ris-tls-failed", false).with_detail("handshake timed out".into()))?
                .map_err(|e| Failure::new("ris-tls-failed", false).with_detail(e.to_string()))?;
            exchange(stream, message, ris.ack_timeout_ms).await?
        }
    };
    judge_ack(&ack, control)
}

/// Writes the framed message and reads one framed answer within the timeout.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, message: &[u8], timeout_ms: u64) -> Result<String, Failure> {
    stream.write_all(&frame(message)).await.map_err(|_| Failure::new("ris-connection-lost", false))?;
    stream.flush().await.map_err(|_| Failure::new("ris-connection-lost", false))?;
    let ack = tokio::time::timeout(Duration::from_millis(timeout_ms), read_one_frame(&mut stream))
        .await
        .map_err(|_| Failure::new("ack-timeout", false).with_detail(format!("no ACK within {timeout_ms} ms")))??;
    let _ = stream.shutdown().await;
    Ok(ack)
}

async fn read_one_frame<S: AsyncRead + Unpin>(stream: &mut S) -> Result<String, Failure> {
    let mut deframer = Deframer::new(MAX_ACK_BYTES);
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.map_err(|_| Failure::new("ris-connection-lost", false))?;
        if n == 0 {
            return Err(Failure::new("ris-connection-lost", false).with_detail("closed without an ACK".into()));
        }
        if let Some(f) = deframer.push(&buf[..n]).into_iter().next() {
            return match f {
                Frame::Message(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
                Frame::TooLarge { .. } => Err(Failure::new("ack-invalid", false).with_detail("the answer is too large for an ACK".into())),
            };
        }
    }
}

/// AA or CA for our control id is a delivery; anything else is a failed attempt.
fn judge_ack(ack: &str, control: &str) -> Result<(), Failure> {
    let Some(field_sep) = ack.strip_prefix("MSH").and_then(|rest| rest.chars().next()) else {
        return Err(Failure::new("ack-invalid", false).with_detail("the answer does not start with MSH".into()));
    };
    let segments = ack.split(['\r', '\n']).filter(|s| !s.is_empty());
    let Some(msa) = segments.clone().find(|s| s.starts_with("MSA")) else {
        return Err(Failure::new("ack-invalid", false).with_detail("the answer has no MSA segment".into()));
    };
    let fields: Vec<&str> = msa.split(field_sep).collect();
    let code = fields.get(1).copied().unwrap_or_default();
    let acked = fields.get(2).copied().unwrap_or_default();
    if acked != control {
        return Err(Failure::new("ack-mismatch", false).with_detail(format!("an ACK for {acked:?}, not {control:?}")));
    }
    // The receiver's reason, for the operator: MSA-3 (older versions) or ERR-8 / ERR-3.
    let reason = || -> String {
        let err = segments.clone().find(|s| s.starts_with("ERR")).map(|s| s.split(field_sep).collect::<Vec<_>>()).unwrap_or_default();
        let text = [fields.get(3).copied(), err.get(8).copied(), err.get(3).copied()].into_iter().flatten().find(|t| !t.is_empty());
        text.unwrap_or("no reason given").chars().take(200).collect()
    };
    match code {
        "AA" | "CA" => Ok(()),
        "AE" | "CE" => Err(Failure::new("ack-error", false).with_detail(reason())),
        "AR" | "CR" => Err(Failure::new("ack-reject", false).with_detail(reason())),
        other => Err(Failure::new("ack-invalid", false).with_detail(format!("MSA-1 {:?}", other.chars().take(8).collect::<String>()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_ids_are_twenty_characters_stable_per_delivery_and_distinct_between_deliveries() {
        let a = control_id("0b7d4a8e-0000-4000-8000-000000000001");
        assert_eq!(a.len(), 20);
        assert_eq!(a, control_id("0b7d4a8e-0000-4000-8000-000000000001"));
        assert_ne!(a, control_id("0b7d4a8e-0000-4000-8000-000000000002"));
    }

    #[test]
    fn only_an_accept_for_this_message_is_a_delivery() {
        let ack = |code: &str, id: &str| format!("MSH|^~\\&|RIS|H|RADSIGHT||20261203||ACK^R01^ACK|A1|P|2.5.1\rMSA|{code}|{id}\r");
        assert!(judge_ack(&ack("AA", "RS1"), "RS1").is_ok());
        assert!(judge_ack(&ack("CA", "RS1"), "RS1").is_ok());
        assert_eq!(judge_ack(&ack("AE", "RS1"), "RS1").unwrap_err().code, "ack-error");
        assert_eq!(judge_ack(&ack("AR", "RS1"), "RS1").unwrap_err().code, "ack-reject");
        assert_eq!(judge_ack(&ack("AA", "RS2"), "RS1").unwrap_err().code, "ack-mismatch");
        assert_eq!(judge_ack("garbage", "RS1").unwrap_err().code, "ack-invalid");
        let with_err = format!("{}ERR|||207|E||||Patient unknown\r", ack("AE", "RS1"));
        assert_eq!(judge_ack(&with_err, "RS1").unwrap_err().detail.as_deref(), Some("Patient unknown"));
    }

    /// The ACK comes from another system: seeded random mutations of real ACKs (flipped,
    /// inserted and dropped bytes, truncation, other separators) never panic, and nothing but
    /// an accept naming this message's control id is ever a delivery.
    #[test]
    fn mutated_acks_never_panic_and_only_an_accept_for_this_message_delivers() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds = [
            "MSH|^~\\&|RIS|H|RADSIGHT||20261203||ACK^R01^ACK|A1|P|2.5.1\rMSA|AA|RS1\r",
            "MSH#^~\\&#RIS#H#RADSIGHT##20261203##ACK#A2#P#2.5.1\rMSA#AE#RS1#bad\rERR###207#E####x\r",
            "MSH|^~\\&|RIS|H|RADSIGHT||20261203||ACK|A3|P|2.3\nMSA|CA|RS1\n",
        ];
        let alphabet = b"|^~\\&#MSAERHCR1S\r\n \xc3\xa9\x00";
        for round in 0..20_000 {
            let mut bytes = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..(next() % 6) {
                let at = (next() as usize) % (bytes.len() + 1);
                match next() % 4 {
                    0 if at < bytes.len() => bytes[at] = alphabet[(next() as usize) % alphabet.len()],
                    1 => bytes.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                    2 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.truncate(at),
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            if judge_ack(&text, "RS1").is_ok() {
                let sep = text.chars().nth(3).unwrap();
                let msa = text.split(['\r', '\n']).find(|s| s.starts_with("MSA")).unwrap();
                let fields: Vec<&str> = msa.split(sep).collect();
                assert!(matches!(fields[1], "AA" | "CA") && fields[2] == "RS1", "{text:?} was taken as a delivery");
            }
        }
    }
}
