//! HL7 v2 over MLLP: imaging orders (`ORM^O01`, `OMI^O23`) and results (`ORU^R01`) in, ACKs out.
//!
//! `message` reads a message into typed values (or a rejection with its reason), `ingest`
//! stores what it means (order, study, job, audit entries) before `ack` builds the answer, and
//! `listener` runs the TCP side with its limits. The framing and the TLS acceptor are in
//! `crate::mllp`, which the outbox's ORU sender shares.
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
