//! Fuzz target: an HL7 v2 message as the MLLP listener hands it to `hl7::ingest`: the frame's
//! bytes are decoded as `ingest::decode_text` does (UTF-8, else Latin-1), read with
//! `message::parse_imaging_message` (with and without a configured Study Instance UID field),
//! and answered with `ack::build_ack`, for an accepted message and for every rejection. The
//! too-large path (`message::reject_unreadable` on the first bytes) is fed the same text.
//!
//! Invariants: no panic, no hang; every ACK is one well-formed HL7 message that
//! `hl7_parser::Message::parse` reads, whose MSH `read_header` reads back with sender and
//! receiver swapped and whose `MSA-2` echoes the incoming control id; an ACK never echoes more
//! than a bounded amount of the incoming message (it is small whatever the input's size).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| radsight_fuzz::hl7_message::run(data));
