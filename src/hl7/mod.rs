//! HL7 v2 over MLLP: imaging orders (`ORM^O01`, `OMI^O23`) and results (`ORU^R01`) in, ACKs out.
//!
//! `mllp` frames bytes, `message` reads a message into typed values (or a rejection with its
//! reason), `ingest` stores what it means (order, study, job, audit entries) before `ack`
//! builds the answer, and `listener` runs the TCP side with its limits.
//!
//! **Invariant:** AA is sent only after the message's effects and audit entries are
//! committed; a control id seen before from the same sender is acknowledged again and changes
//! nothing. **Boundary:** no message text reaches logs or the audit trail: only codes,
//! control ids and `Patient/<id>` references.

pub mod ack;
pub mod ingest;
pub mod listener;
pub mod message;
pub mod mllp;
