//! Building the `ACK` for a received message (original acknowledgement mode).
//!
//! `MSH` swaps sender and receiver (our MSH-3/4 are the incoming MSH-5/6 and the other way
//! round), `MSA-1` is AA/AE/AR and `MSA-2` the incoming `MSH-10`. On AE/AR an `ERR` segment
//! (v2.5 layout: `ERR-2` location, `ERR-3` table 0357 code, `ERR-4` severity, `ERR-8` the
//! reason) says why; `MSA-3` repeats the reason for v2.3 receivers.

use hl7_parser::message::Separators;

use super::message::{AckCode, Header, Rejection};

/// Escapes text for a field of a message using the standard separators.
fn escape(s: &str) -> String {
    Separators::default().encode(s).to_string()
}

/// Echoes an incoming MSH field. Fields are copied as sent (a HD type keeps its `^`
/// components), without segment breaks, with the field separator escaped, and at most 227
/// characters (the v2.5 length of an HD): an ACK never echoes a stranger's megabyte.
fn echo(s: &str) -> String {
    s.chars().filter(|c| !matches!(c, '\r' | '\n')).take(227).collect::<String>().replace('|', "\\F\\")
}

fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!("{:04}{:02}{:02}{:02}{:02}{:02}+0000", now.year(), u8::from(now.month()), now.day(), now.hour(), now.minute(), now.second())
}

fn ack_control_id() -> String {
    // 20 characters, the v2.3 length of MSH-10.
    format!("RS{}", &uuid::Uuid::new_v4().simple().to_string()[..18])
}

/// The ACK for `header` with `code`, and when it is not AA, the rejection's ERR segment.
pub fn build_ack(header: &Header, code: AckCode, rejection: Option<&Rejection>) -> String {
    let version = if header.version.starts_with("2.") { header.version.as_str() } else { "2.5.1" };
    let processing = if header.processing_id.is_empty() { "P" } else { header.processing_id.as_str() };
    let trigger = if header.trigger.is_empty() { String::new() } else { format!("^{}^ACK", echo(&header.trigger)) };
    let control = header.control_id.as_ref().map(|c| c.as_str()).unwrap_or("");
    let mut out = format!(
        "MSH|^~\\&|{}|{}|{}|{}|{}||ACK{trigger}|{}|{}|{}\r",
        echo(&header.receiving_application),
        echo(&header.receiving_facility),
        echo(&header.sending_application),
        echo(&header.sending_facility),
        timestamp(),
        ack_control_id(),
        echo(processing),
        echo(version),
    );
    match rejection {
        None => out.push_str(&format!("MSA|{}|{control}\r", code.as_str())),
        Some(r) => {
            let text = escape(r.text);
            out.push_str(&format!("MSA|{}|{control}|{text}\r", code.as_str()));
            out.push_str(&format!(
                "ERR||{}|{}^{}^HL70357|E||||{text}\r",
                r.location.unwrap_or(""),
                r.error_code,
                escape(error_name(r.error_code))
            ));
        }
    }
    out
}

/// The display text of a table 0357 code.
fn error_name(code: u16) -> &'static str {
    match code {
        100 => "Segment sequence error",
        101 => "Required field missing",
        102 => "Data type error",
        103 => "Table value not found",
        200 => "Unsupported message type",
        201 => "Unsupported event code",
        202 => "Unsupported processing id",
        203 => "Unsupported version id",
        207 => "Application internal error",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7::message::{ParseOptions, parse_imaging_message, read_header, tests::OMI};

    fn field<'a>(ack: &'a str, segment: &str, n: usize) -> &'a str {
        let seg = ack.split('\r').find(|s| s.starts_with(segment)).unwrap_or_else(|| panic!("no {segment} in {ack:?}"));
        let fields: Vec<&str> = seg.split('|').collect();
        // MSH-n is fields[n - 1]; other segments' field n is fields[n].
        let i = if segment == "MSH" { n - 1 } else { n };
        fields.get(i).copied().unwrap_or("")
    }

    #[test]
    fn an_accept_swaps_sender_and_receiver_and_echoes_the_control_id() {
        let header = read_header(OMI).unwrap();
        let ack = build_ack(&header, AckCode::AA, None);
        assert_eq!((field(&ack, "MSH", 3), field(&ack, "MSH", 4)), ("RADSIGHT", "AI"));
        assert_eq!((field(&ack, "MSH", 5), field(&ack, "MSH", 6)), ("RIS", "HOSP"));
        assert_eq!(field(&ack, "MSH", 9), "ACK^O23^ACK");
        assert_eq!(field(&ack, "MSH", 12), "2.5.1");
        assert_ne!(field(&ack, "MSH", 10), "MSG0001");
        assert_eq!((field(&ack, "MSA", 1), field(&ack, "MSA", 2)), ("AA", "MSG0001"));
        assert!(!ack.contains("ERR"));
        // The ACK itself is a well-formed message.
        hl7_parser::Message::parse(ack.trim_end_matches('\r')).unwrap();
    }

    #[test]
    fn an_error_carries_an_err_segment_saying_why() {
        let bad = OMI.replace("MRN123^^^HOSP^MR~999^^^SSA^SS", "");
        let r = parse_imaging_message(&bad, &ParseOptions::default()).unwrap_err();
        let ack = build_ack(&r.header, r.ack, Some(&r));
        assert_eq!((field(&ack, "MSA", 1), field(&ack, "MSA", 2)), ("AE", "MSG0001"));
        assert_eq!(field(&ack, "ERR", 2), "PID^1^3");
        assert_eq!(field(&ack, "ERR", 3), "101^Required field missing^HL70357");
        assert_eq!(field(&ack, "ERR", 4), "E");
        assert!(field(&ack, "ERR", 8).contains("PID-3"));
        assert!(!ack.contains("Doe"), "the ACK must not quote the message");
    }
}
