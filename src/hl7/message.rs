//! Reading imaging orders (`ORM^O01`, `OMI^O23`) and results (`ORU^R01`) with `hl7-parser`.
//!
//! The fields taken, and where from (first found wins):
//!
//! | value | fields |
//! |---|---|
//! | patient id | `PID-3`: the repetition whose type (`PID-3.5`) is `MR`, else the first; component 1 |
//! | order numbers | placer `ORC-2.1` (else `OBR-2.1`), filler `ORC-3.1` (else `OBR-3.1`) |
//! | procedure | `OBR-4` (`code^text^system`) |
//! | result status | `OBR-25` |
//! | accession | `OBR-18.1` (IHE Scheduled Workflow), else `IPC-1.1` |
//! | Study Instance UID | the configured field, else `IPC-3.1`, else `ZDS-1.1`, else an `OBX` whose `OBX-3.1` is DCM `110180` or `113014` (its `OBX-5`) |
//! | modality | `IPC-5.1`, else `OBR-24` when it is a DICOM modality code |
//!
//! A message that cannot be read, or is missing what radsight needs, is a [`Rejection`] with
//! the ACK code, the HL7 error code (table 0357), the location and a fixed reason text. The
//! reasons never quote the message: they go back to the sender and into the audit trail.

use hl7_parser::Message;
use hl7_parser::message::Separators;
use hl7_parser::query::LocationQuery;

use crate::domain::{Hl7ControlId, PatientId, StudyInstanceUid};

/// What kind of imaging message it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// `ORM^O01` or `OMI^O23`.
    Order,
    /// `ORU^R01`.
    Result,
}

/// The `MSH` fields the ACK needs, read even from a message that is otherwise unusable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    /// `MSH-9` as `code^trigger`.
    pub message_type: String,
    pub trigger: String,
    pub control_id: Option<Hl7ControlId>,
    pub processing_id: String,
    pub version: String,
}

impl Header {
    /// The sending system, `MSH-3^MSH-4`; control ids are unique per sender.
    pub fn sender(&self) -> String {
        format!("{}^{}", self.sending_application, self.sending_facility)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Procedure {
    pub code: String,
    pub display: Option<String>,
    pub system: Option<String>,
}

/// A readable imaging order or result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagingMessage {
    pub header: Header,
    pub control_id: Hl7ControlId,
    pub kind: MessageKind,
    pub patient: PatientId,
    /// Who assigned the patient id: `PID-3.4` (its namespace id) of the repetition taken, else
    /// the sending facility (`MSH-4`), which HL7 implies when the authority is absent.
    pub patient_authority: String,
    /// `ORC-1` order control (NW, CA, XO, SC, ...); `RE` for a result without ORC.
    pub order_control: String,
    pub placer_order: Option<String>,
    pub filler_order: Option<String>,
    pub procedure: Option<Procedure>,
    pub result_status: Option<String>,
    pub accession: Option<String>,
    pub study_uid: Option<StudyInstanceUid>,
    pub modality: Option<String>,
}

impl ImagingMessage {
    /// A final or corrected result (`OBR-25` F or C).
    pub fn is_final_result(&self) -> bool {
        self.kind == MessageKind::Result && matches!(self.result_status.as_deref(), Some("F" | "C"))
    }

    /// An order that cancels or discontinues rather than asks for imaging.
    pub fn is_cancellation(&self) -> bool {
        matches!(self.order_control.as_str(), "CA" | "OC" | "DC" | "CR")
    }

    /// Whether the study this message names should be analysed: a final result, or an order
    /// (not a cancellation) that names its study.
    pub fn wants_analysis(&self) -> bool {
        self.study_uid.is_some()
            && match self.kind {
                MessageKind::Result => self.is_final_result(),
                MessageKind::Order => !self.is_cancellation(),
            }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// Application accept.
    AA,
    /// Application error: the message was understood but cannot be processed as it is.
    AE,
    /// Application reject: the message is not one radsight accepts (type, version, framing).
    AR,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
        }
    }
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub ack: AckCode,
    /// HL7 table 0357 (message error condition codes).
    pub error_code: u16,
    /// `ERR-2` error location (`segment^sequence^field`), when one field is at fault.
    pub location: Option<&'static str>,
    /// A stable code for the audit trail.
    pub reason: &'static str,
    /// A fixed human-readable sentence for `ERR-8`/`MSA-3`; never quotes the message.
    pub text: &'static str,
    /// Whatever of the MSH could be read, for the ACK (boxed: a rejection travels in `Err`).
    pub header: Box<Header>,
}

/// Table 0357 codes radsight uses.
pub mod error_code {
    pub const SEGMENT_SEQUENCE: u16 = 100;
    pub const REQUIRED_FIELD_MISSING: u16 = 101;
    pub const DATA_TYPE: u16 = 102;
    pub const UNSUPPORTED_MESSAGE_TYPE: u16 = 200;
    pub const UNSUPPORTED_EVENT: u16 = 201;
    pub const UNSUPPORTED_VERSION: u16 = 203;
    pub const MESSAGE_TOO_LARGE: u16 = 100;
    pub const UNKNOWN_KEY: u16 = 204;
    pub const DUPLICATE_KEY: u16 = 205;
    pub const INTERNAL: u16 = 207;
}

/// Options for reading messages.
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// A site-specific location of the Study Instance UID (e.g. `OBX[2].5`), tried first.
    pub study_uid_field: Option<LocationQuery>,
}

/// A rejection of a message with this header, answered with `ack`.
pub fn rejection(
    header: &Header,
    ack: AckCode,
    error_code: u16,
    location: Option<&'static str>,
    reason: &'static str,
    text: &'static str,
) -> Rejection {
    Rejection { ack, error_code, location, reason, text, header: Box::new(header.clone()) }
}

/// Reads the MSH by hand, so that even a message `hl7-parser` refuses can be answered with its
/// control id. Returns `None` when the text does not start with an MSH segment.
pub fn read_header(text: &str) -> Option<Header> {
    let first = text.split(['\r', '\n']).next()?;
    let rest = first.strip_prefix("MSH")?;
    let fs = rest.chars().next()?;
    if fs.is_alphanumeric() || fs.is_whitespace() {
        return None;
    }
    let component = rest.chars().nth(1).unwrap_or('^');
    // fields[n - 1] is MSH-n for n >= 2 (MSH-1 is the separator itself).
    let fields: Vec<&str> = first.split(fs).collect();
    let get = |n: usize| fields.get(n - 1).copied().unwrap_or("").trim().to_owned();
    let msh9 = get(9);
    let mut parts = msh9.split(component);
    let code = parts.next().unwrap_or("").to_owned();
    let trigger = parts.next().unwrap_or("").to_owned();
    Some(Header {
        sending_application: get(3),
        sending_facility: get(4),
        receiving_application: get(5),
        receiving_facility: get(6),
        message_type: if trigger.is_empty() { code } else { format!("{code}^{trigger}") },
        trigger,
        control_id: Hl7ControlId::parse(&get(10)).ok(),
        processing_id: get(11).split(component).next().unwrap_or("").to_owned(),
        version: get(12).split(component).next().unwrap_or("").to_owned(),
    })
}

/// A rejection for a message that never got as far as parsing (too large, not text).
pub fn reject_unreadable(head: &str, reason: &'static str, text: &'static str) -> Rejection {
    let header = read_header(head).unwrap_or_default();
    rejection(&header, AckCode::AR, error_code::MESSAGE_TOO_LARGE, None, reason, text)
}

/// Reads an imaging order or result.
pub fn parse_imaging_message(text: &str, options: &ParseOptions) -> Result<ImagingMessage, Rejection> {
    let text = text.trim_end_matches(['\r', '\n']);
    // A NUL can never be stored (PostgreSQL text refuses it): AR, since sending the same bytes
    // again cannot help, where AE would have the sender retry for ever. The ACK is built from
    // the header without its NULs.
    if text.contains('\0') {
        let header = read_header(&text.replace('\0', "")).unwrap_or_default();
        return Err(rejection(
            &header,
            AckCode::AR,
            error_code::DATA_TYPE,
            None,
            "nul-byte",
            "the message contains a NUL byte, which no field may hold",
        ));
    }
    let Some(header) = read_header(text) else {
        let empty = Header::default();
        return Err(rejection(
            &empty,
            AckCode::AR,
            error_code::SEGMENT_SEQUENCE,
            Some("MSH"),
            "no-msh",
            "the message does not start with an MSH segment",
        ));
    };
    let Some(control_id) = header.control_id.clone() else {
        return Err(rejection(
            &header,
            AckCode::AR,
            error_code::REQUIRED_FIELD_MISSING,
            Some("MSH^1^10"),
            "bad-control-id",
            "MSH-10 message control id is missing or not valid",
        ));
    };
    if !header.version.starts_with("2.") {
        return Err(rejection(
            &header,
            AckCode::AR,
            error_code::UNSUPPORTED_VERSION,
            Some("MSH^1^12"),
            "unsupported-version",
            "MSH-12 must be an HL7 version 2.x",
        ));
    }
    let code = header.message_type.split('^').next().unwrap_or("");
    let kind = match (code, header.trigger.as_str()) {
        ("ORM", "O01") | ("OMI", "O23") => MessageKind::Order,
        ("ORU", "R01") => MessageKind::Result,
        ("ORM" | "OMI" | "ORU", _) => {
            return Err(rejection(
                &header,
                AckCode::AR,
                error_code::UNSUPPORTED_EVENT,
                Some("MSH^1^9"),
                "unsupported-event",
                "only ORM^O01, OMI^O23 and ORU^R01 are accepted",
            ));
        }
        _ => {
            return Err(rejection(
                &header,
                AckCode::AR,
                error_code::UNSUPPORTED_MESSAGE_TYPE,
                Some("MSH^1^9"),
                "unsupported-message-type",
                "only ORM^O01, OMI^O23 and ORU^R01 are accepted",
            ));
        }
    };
    let msg = Message::parse_with_lenient_newlines(text, true).map_err(|_| {
        rejection(&header, AckCode::AR, error_code::SEGMENT_SEQUENCE, None, "unparseable", "the message structure could not be parsed")
    })?;
    let get = |q: &str| value(&msg, q);

    if msg.segment("PID").is_none() {
        return Err(rejection(
            &header,
            AckCode::AE,
            error_code::SEGMENT_SEQUENCE,
            Some("PID"),
            "missing-pid",
            "the PID segment is missing",
        ));
    }
    let (patient_raw, authority) = patient_identifier(&msg).ok_or_else(|| {
        rejection(
            &header,
            AckCode::AE,
            error_code::REQUIRED_FIELD_MISSING,
            Some("PID^1^3"),
            "missing-patient-id",
            "PID-3 patient identifier is missing",
        )
    })?;
    let patient = PatientId::parse(&patient_raw).map_err(|_| {
        rejection(
            &header,
            AckCode::AE,
            error_code::DATA_TYPE,
            Some("PID^1^3"),
            "bad-patient-id",
            "PID-3 is not usable as a patient id (1-64 of A-Z a-z 0-9 - .)",
        )
    })?;
    if msg.segment("OBR").is_none() {
        return Err(rejection(
            &header,
            AckCode::AE,
            error_code::SEGMENT_SEQUENCE,
            Some("OBR"),
            "missing-obr",
            "the OBR segment is missing",
        ));
    }
    if kind == MessageKind::Order && msg.segment("ORC").is_none() {
        return Err(rejection(
            &header,
            AckCode::AE,
            error_code::SEGMENT_SEQUENCE,
            Some("ORC"),
            "missing-orc",
            "an order needs an ORC segment",
        ));
    }
    let order_control = get("ORC.1").unwrap_or_else(|| if kind == MessageKind::Result { "RE".into() } else { "NW".into() });
    let procedure = get("OBR.4.1").map(|code| Procedure { code, display: get("OBR.4.2"), system: get("OBR.4.3") });

    let mut uid_sources: Vec<(&'static str, Option<String>)> = Vec::new();
    if let Some(q) = &options.study_uid_field {
        uid_sources.push(("configured", msg.query(q.clone()).map(|r| decode(&msg.separators, r.raw_value())).filter(|s| !s.is_empty())));
    }
    uid_sources.push(("IPC^1^3", get("IPC.3.1")));
    uid_sources.push(("ZDS^1^1", get("ZDS.1.1")));
    uid_sources.push(("OBX^5", obx_study_uid(&msg)));
    let study_uid = match uid_sources.into_iter().find_map(|(at, v)| v.map(|v| (at, v))) {
        None => None,
        Some((_, v)) => Some(StudyInstanceUid::parse(&v).map_err(|_| {
            rejection(
                &header,
                AckCode::AE,
                error_code::DATA_TYPE,
                Some("IPC^1^3"),
                "bad-study-uid",
                "the Study Instance UID is not a valid DICOM UID",
            )
        })?),
    };

    let patient_authority = match authority.is_empty() {
        true => header.sending_facility.split(msg.separators.component).next().unwrap_or_default().to_owned(),
        false => authority,
    };
    Ok(ImagingMessage {
        kind,
        patient,
        patient_authority,
        order_control,
        placer_order: get("ORC.2.1").or_else(|| get("OBR.2.1")),
        filler_order: get("ORC.3.1").or_else(|| get("OBR.3.1")),
        procedure,
        result_status: get("OBR.25"),
        accession: get("OBR.18.1").or_else(|| get("IPC.1.1")),
        study_uid,
        modality: get("IPC.5.1").or_else(|| get("OBR.24").and_then(|m| dicom_modality(&m))),
        control_id,
        header,
    })
}

/// A field, component or subcomponent, unescaped and trimmed; empty and HL7 null (`""`) are `None`.
fn value(msg: &Message, query: &str) -> Option<String> {
    let raw = msg.query(query)?.raw_value();
    let v = decode(&msg.separators, raw);
    (!v.is_empty() && v != "\"\"").then_some(v)
}

fn decode(separators: &Separators, raw: &str) -> String {
    unescape(separators, raw).trim().to_owned()
}

/// Replaces HL7 escape sequences (`\F\`, `\S\`, `\T\`, `\R\`, `\E\`, `\X0D\`, `\X0A\`, `\.br\`)
/// as `hl7-parser`'s `Separators::decode` does: another sequence is kept without its escape
/// characters, an unterminated one is dropped. That function is not used because it slices the
/// text at character counts as if they were byte offsets: text with a non-ASCII character before
/// an escape sequence came out garbled, or panicked (`fuzz/regressions/hl7_message/`).
fn unescape(separators: &Separators, raw: &str) -> String {
    let esc = separators.escape;
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find(esc) {
        out.push_str(&rest[..start]);
        let sequence = &rest[start + esc.len_utf8()..];
        let Some(end) = sequence.find(esc) else { return out };
        match &sequence[..end] {
            "F" => out.push(separators.field),
            "R" => out.push(separators.repetition),
            "S" => out.push(separators.component),
            "T" => out.push(separators.subcomponent),
            "E" => out.push(esc),
            "X0A" => out.push('\n'),
            "X0D" | ".br" => out.push('\r'),
            other => out.push_str(other),
        }
        rest = &sequence[end + esc.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// `PID-3`: the medical record number repetition if marked (`PID-3.5` = MR), else the first;
/// with its assigning authority's namespace id (`PID-3.4.1`), which may be empty.
fn patient_identifier(msg: &Message) -> Option<(String, String)> {
    let field = msg.segment("PID")?.field(3)?;
    let ids: Vec<(String, String, String)> = field
        .repeats()
        .map(|r| {
            let part = |n| r.component(n).map(|c| decode(&msg.separators, c.raw_value())).unwrap_or_default();
            let authority = r.component(4).map(|c| c.raw_value().split(msg.separators.subcomponent).next().unwrap_or_default().to_owned());
            (part(1), authority.map(|a| decode(&msg.separators, &a)).unwrap_or_default(), part(5))
        })
        .filter(|(id, _, _)| !id.is_empty())
        .collect();
    ids.iter().find(|(_, _, kind)| kind == "MR").or(ids.first()).map(|(id, authority, _)| (id.clone(), authority.clone()))
}

/// An `OBX` whose observation id is DICOM code 110180 (Study Instance UID) or 113014 (DICOM
/// Study, as IHE RAD results and radsight's own ORU^R01 carry it) has the UID in `OBX-5`.
fn obx_study_uid(msg: &Message) -> Option<String> {
    (1..=msg.segment_count("OBX")).find_map(|n| {
        let code = value(msg, &format!("OBX[{n}].3.1"))?;
        matches!(code.as_str(), "110180" | "113014").then(|| value(msg, &format!("OBX[{n}].5.1"))).flatten()
    })
}

/// `OBR-24` (diagnostic service section, table 0074) as a DICOM modality, when it is one.
fn dicom_modality(section: &str) -> Option<String> {
    let m = match section {
        "NMR" => "MR",
        "NMS" => "NM",
        "CT" | "MR" | "US" | "CR" | "DX" | "MG" | "NM" | "PT" | "XA" | "RF" | "OT" => section,
        _ => return None,
    };
    Some(m.to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An OMI^O23 for patient MRN123 with an IPC segment naming the study.
    pub const OMI: &str = "MSH|^~\\&|RIS|HOSP|RADSIGHT|AI|20261129101500||OMI^O23^OMI_O23|MSG0001|P|2.5.1\r\
PID|1||MRN123^^^HOSP^MR~999^^^SSA^SS||Doe^Jane||19700101|F\r\
ORC|NW|PLC100|FIL200||SC\r\
TQ1|1\r\
OBR|1|PLC100|FIL200|71260^CT CHEST W CONTRAST^CPT||||||||||||||ACC300||||||CT\r\
IPC|ACC300|RP1|1.2.840.113619.2.55.3.1234|SPS1|CT\r";

    fn with(base: &str, from: &str, to: &str) -> String {
        assert!(base.contains(from), "{from:?} not in the base message");
        base.replacen(from, to, 1)
    }

    /// The expectation for one case: `Ok` fields, or the rejection's (ack, error code, reason).
    enum Expected<'a> {
        Accepted {
            kind: MessageKind,
            patient: &'a str,
            uid: Option<&'a str>,
            accession: Option<&'a str>,
            modality: Option<&'a str>,
            wants_analysis: bool,
        },
        Rejected(AckCode, u16, &'a str),
    }

    fn check(input: &str, expected: Expected) {
        check_with(input, &ParseOptions::default(), expected)
    }

    fn check_with(input: &str, options: &ParseOptions, expected: Expected) {
        let got = parse_imaging_message(input, options);
        match (got, expected) {
            (Ok(m), Expected::Accepted { kind, patient, uid, accession, modality, wants_analysis }) => {
                assert_eq!(m.kind, kind, "{input:?}");
                assert_eq!(m.patient.as_str(), patient, "{input:?}");
                assert_eq!(m.study_uid.as_ref().map(|u| u.as_str()), uid, "{input:?}");
                assert_eq!(m.accession.as_deref(), accession, "{input:?}");
                assert_eq!(m.modality.as_deref(), modality, "{input:?}");
                assert_eq!(m.wants_analysis(), wants_analysis, "{input:?}");
            }
            (Err(r), Expected::Rejected(ack, code, reason)) => {
                assert_eq!((r.ack, r.error_code, r.reason), (ack, code, reason), "{input:?}");
            }
            (Ok(m), Expected::Rejected(..)) => panic!("accepted but should be rejected: {m:?}"),
            (Err(r), Expected::Accepted { .. }) => panic!("rejected ({}) but should be accepted: {input:?}", r.reason),
        }
    }

    fn accepted<'a>(
        kind: MessageKind,
        patient: &'a str,
        uid: Option<&'a str>,
        accession: Option<&'a str>,
        modality: Option<&'a str>,
        wants: bool,
    ) -> Expected<'a> {
        Expected::Accepted { kind, patient, uid, accession, modality, wants_analysis: wants }
    }

    const UID: &str = "1.2.840.113619.2.55.3.1234";

    #[test]
    fn orders_and_results_are_read() {
        use MessageKind::*;
        check(OMI, accepted(Order, "MRN123", Some(UID), Some("ACC300"), Some("CT"), true));
        // ORM^O01 with the study UID in ZDS-1 and the modality from OBR-24.
        let orm = with(
            &with(OMI, "OMI^O23^OMI_O23", "ORM^O01"),
            "IPC|ACC300|RP1|1.2.840.113619.2.55.3.1234|SPS1|CT",
            "ZDS|1.2.3.4^RIS^Application^DICOM",
        );
        check(&orm, accepted(Order, "MRN123", Some("1.2.3.4"), Some("ACC300"), Some("CT"), true));
        // ORU^R01 final result with the UID in an OBX coded DCM 110180.
        let oru = "MSH|^~\\&|RIS|HOSP|RADSIGHT|AI|20261129120000||ORU^R01|R1|P|2.3\r\
PID|1||P-77||Roe^Richard\r\
OBR|1|PLC1|FIL1|71250^CT CHEST^CPT||||||||||||||ACC9|||||||F\r\
OBX|1|ST|110180^Study Instance UID^DCM||1.2.3.99||||||F\r";
        check(oru, accepted(Result, "P-77", Some("1.2.3.99"), Some("ACC9"), None, true));
        let dicom_study = oru.replace("110180^Study Instance UID^DCM", "113014^DICOM Study^DCM");
        check(&dicom_study, accepted(Result, "P-77", Some("1.2.3.99"), Some("ACC9"), None, true));
        // A preliminary result is stored but not analysed.
        check(&oru.replace("|||||||F\r", "|||||||P\r"), accepted(Result, "P-77", Some("1.2.3.99"), Some("ACC9"), None, false));
        // A cancellation names a study but asks for no analysis.
        check(&with(OMI, "ORC|NW", "ORC|CA"), accepted(Order, "MRN123", Some(UID), Some("ACC300"), Some("CT"), false));
        // No UID anywhere: accepted (the order is stored) but nothing to analyse.
        check(
            &with(OMI, "IPC|ACC300|RP1|1.2.840.113619.2.55.3.1234|SPS1|CT", "IPC|ACC300"),
            accepted(Order, "MRN123", None, Some("ACC300"), Some("CT"), false),
        );
        // \n segment separators are tolerated.
        check(&OMI.replace('\r', "\n"), accepted(Order, "MRN123", Some(UID), Some("ACC300"), Some("CT"), true));
        // The MR repetition of PID-3 wins over the first one.
        check(
            &with(OMI, "MRN123^^^HOSP^MR~999^^^SSA^SS", "999^^^SSA^SS~MRN123^^^HOSP^MR"),
            accepted(Order, "MRN123", Some(UID), Some("ACC300"), Some("CT"), true),
        );
    }

    #[test]
    fn the_shipped_example_messages_are_accepted() {
        let oru = include_str!("../../examples/hl7/oru-r01.hl7");
        check(
            oru,
            accepted(MessageKind::Result, "example-patient", Some("1.2.826.0.1.3680043.10.2001.1"), Some("ACC-1"), Some("CT"), true),
        );
        let omi = include_str!("../../examples/hl7/omi-o23.hl7");
        check(omi, accepted(MessageKind::Order, "example-patient", Some("1.2.826.0.1.3680043.10.2001.2"), Some("ACC-2"), Some("CT"), true));
    }

    #[test]
    fn a_configured_field_is_tried_first_for_the_study_uid() {
        let options = ParseOptions { study_uid_field: Some(LocationQuery::parse("OBR.20").unwrap()) };
        let msg = with(OMI, "ACC300||||||CT", "ACC300||1.9.8.7||||CT");
        check_with(&msg, &options, accepted(MessageKind::Order, "MRN123", Some("1.9.8.7"), Some("ACC300"), Some("CT"), true));
    }

    #[test]
    fn bad_messages_are_rejected_with_a_reason() {
        use AckCode::*;
        check("", Expected::Rejected(AR, 100, "no-msh"));
        check("PID|1||X\r", Expected::Rejected(AR, 100, "no-msh"));
        check(&with(OMI, "|MSG0001|", "||"), Expected::Rejected(AR, 101, "bad-control-id"));
        check(&with(OMI, "OMI^O23^OMI_O23", "ADT^A01"), Expected::Rejected(AR, 200, "unsupported-message-type"));
        check(&with(OMI, "OMI^O23^OMI_O23", "ORU^R03"), Expected::Rejected(AR, 201, "unsupported-event"));
        check(&with(OMI, "|P|2.5.1", "|P|3.0"), Expected::Rejected(AR, 203, "unsupported-version"));
        check(&with(OMI, "PID|1||MRN123^^^HOSP^MR~999^^^SSA^SS||Doe^Jane||19700101|F\r", ""), Expected::Rejected(AE, 100, "missing-pid"));
        check(&with(OMI, "MRN123^^^HOSP^MR~999^^^SSA^SS", ""), Expected::Rejected(AE, 101, "missing-patient-id"));
        check(&with(OMI, "MRN123^^^HOSP^MR", "MRN 123^^^HOSP^MR"), Expected::Rejected(AE, 102, "bad-patient-id"));
        check(&with(OMI, "ORC|NW|PLC100|FIL200||SC\r", ""), Expected::Rejected(AE, 100, "missing-orc"));
        check(&with(OMI, "1.2.840.113619.2.55.3.1234", "1.2.abc"), Expected::Rejected(AE, 102, "bad-study-uid"));
        check(&with(OMI, "Doe^Jane", "Do\0e^Jane"), Expected::Rejected(AR, 102, "nul-byte"));
    }

    #[test]
    fn the_header_is_read_even_from_a_message_that_is_otherwise_unusable() {
        let h = read_header("MSH|^~\\&|A|B|C|D|2026||ORM^O01|X1|P|2.3\rgarbage").unwrap();
        assert_eq!((h.sending_application.as_str(), h.receiving_facility.as_str()), ("A", "D"));
        assert_eq!(h.control_id.unwrap().as_str(), "X1");
        assert_eq!((h.message_type.as_str(), h.trigger.as_str(), h.version.as_str()), ("ORM^O01", "O01", "2.3"));
        assert_eq!(read_header("MSHX"), None);
    }

    #[test]
    fn escape_sequences_are_decoded_after_non_ascii_text() {
        let seps = Separators::default();
        for (raw, expected) in [
            (r"R\S\ntgen", "R^ntgen"),
            (r"Röntgen Thorax\T\Lunge", "Röntgen Thorax&Lunge"),
            (r"»»\F\ard\E\", "»»|ard\\"),
            (r"a\X0D\b\.br\c\X0A\d", "a\rb\rc\nd"),
            (r"kept\H\as text", "keptHas text"),
            (r"unterminated\S", "unterminated"),
            ("ünterminated\\", "ünterminated"),
        ] {
            assert_eq!(unescape(&seps, raw), expected, "{raw:?}");
        }
        // Through the parser: a display text in OBR-4.2 came back garbled ("\\" for "&")...
        let msg = parse_imaging_message(&with(OMI, "CT CHEST W CONTRAST", r"Röntgen Thorax\T\Lunge"), &ParseOptions::default()).unwrap();
        assert_eq!(msg.procedure.unwrap().display.as_deref(), Some("Röntgen Thorax&Lunge"));
        // ...and the fuzz find, Latin-1 text before an escape in PID-3, panicked inside hl7-parser.
        let text = crate::hl7::ingest::decode_text(include_bytes!(
            "../../fuzz/regressions/hl7_message/latin1-before-escape-panicked-in-hl7-parser-decode.hl7"
        ));
        check(&text, Expected::Rejected(AckCode::AE, 102, "bad-patient-id"));
    }

    #[test]
    fn random_text_never_panics() {
        let mut state = 0x1234_5678_9abc_def1u64;
        let alphabet: Vec<char> = "MSH|^~\\&\r\nPIDOBRCIZXS0123456789.\"".chars().collect();
        for _ in 0..3000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 120) as usize;
            let mut s = String::from(if state.is_multiple_of(3) { "MSH|^~\\&|" } else { "" });
            let mut x = state;
            for _ in 0..len {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                s.push(alphabet[(x >> 33) as usize % alphabet.len()]);
            }
            let _ = parse_imaging_message(&s, &ParseOptions::default());
            let _ = parse_imaging_message(&format!("{}{s}", &OMI[..OMI.len() / 2]), &ParseOptions::default());
        }
    }
}
