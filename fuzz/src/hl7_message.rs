//! The `hl7_message` fuzz target's body; what it feeds and checks is documented in `fuzz_targets/hl7_message.rs`.

use std::sync::LazyLock;

use hl7_parser::query::LocationQuery;
use radsight::hl7::ack::build_ack;
use radsight::hl7::ingest::decode_text;
use radsight::hl7::message::{AckCode, Header, ParseOptions, Rejection, parse_imaging_message, read_header, reject_unreadable};

static CONFIGURED: LazyLock<ParseOptions> =
    LazyLock::new(|| ParseOptions { study_uid_field: Some(LocationQuery::parse("OBX[2].5").expect("a valid location query")) });

/// An ACK is a parseable message answering `header`, and bounded in size.
fn check_ack(ack: &str, header: &Header, code: AckCode) {
    assert!(ack.len() < 16384, "an ACK of {} bytes", ack.len());
    hl7_parser::Message::parse(ack.trim_end_matches('\r')).unwrap_or_else(|e| panic!("the ACK does not parse: {e:?}\n{ack:?}"));
    let back = read_header(ack).expect("the ACK starts with an MSH");
    // Fields are echoed as sent, except that `|` is escaped, segment breaks are dropped and
    // they are cut at 227 characters; `read_header` trims, so compare what survives that.
    let echoed = |s: &str| s.chars().filter(|c| !matches!(c, '\r' | '\n')).take(227).collect::<String>().replace('|', "\\F\\");
    assert_eq!(back.receiving_application, echoed(&header.sending_application).trim(), "{ack:?}");
    assert_eq!(back.sending_facility, echoed(&header.receiving_facility).trim(), "{ack:?}");
    let msa: Vec<&str> = ack.split('\r').find(|s| s.starts_with("MSA|")).expect("an MSA segment").split('|').collect();
    assert_eq!(msa[1], code.as_str());
    assert_eq!(msa[2], header.control_id.as_ref().map(|c| c.as_str()).unwrap_or(""));
}

fn check_rejection(r: &Rejection) {
    let ack = build_ack(&r.header, r.ack, Some(r));
    check_ack(&ack, &r.header, r.ack);
    assert_ne!(r.ack, AckCode::AA);
}

pub fn run(data: &[u8]) {
    let text = decode_text(data);
    for options in [&ParseOptions::default(), &*CONFIGURED] {
        match parse_imaging_message(&text, options) {
            Ok(msg) => {
                assert_eq!(msg.header.control_id.as_ref(), Some(&msg.control_id));
                let _ = msg.wants_analysis();
                check_ack(&build_ack(&msg.header, AckCode::AA, None), &msg.header, AckCode::AA);
            }
            Err(r) => check_rejection(&r),
        }
    }
    // The listener keeps the first 2048 bytes of an oversized message.
    let head: String = text.chars().take(2048).collect();
    check_rejection(&reject_unreadable(&head, "too-large", "the message exceeds the size limit"));
}
