//! HL7 v2 over MLLP: imaging orders (`ORM^O01`, `OMI^O23`) and results (`ORU^R01`) in, ACKs out.
//!
//! `mllp` frames bytes, `message` reads a message into typed values (or a rejection with its
//! reason), `ingest` stores what it means (order, study, job, audit entries) before `ack`
//! builds the answer, `listener` runs the TCP side with its limits, and `tls` builds the
//! optional MLLP-over-TLS acceptor (mutual TLS with a client CA).
//!
//! **Invariant:** AA is sent only after the message's effects and audit entries are
//! committed; a control id seen before from the same sender with the same content (but for
//! `MSH-7`) is acknowledged again and changes nothing, with other content it is answered AE.
//! Only allowed senders (address ranges, `MSH-3`/`MSH-4`) are read; others get AR. **Boundary:** no message text reaches logs or the audit trail: only codes,
//! control ids and `Patient/<id>` references.

pub mod ack;
pub mod ingest;
pub mod listener;
pub mod message;
pub mod mllp;
pub mod tls;
