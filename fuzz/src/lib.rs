//! The fuzz targets' bodies, one module per target, each with `run(data)`: the targets in
//! `fuzz_targets/` call them, and radsight's `tests/api/fuzz_regressions.rs` includes this file
//! (`#[path]`) to replay `fuzz/regressions/<target>/` through the same code on stable.

#[path = "cds_hooks_request.rs"]
pub mod cds_hooks_request;
#[path = "client_jwt.rs"]
pub mod client_jwt;
#[path = "fhir.rs"]
pub mod fhir;
#[path = "hl7_message.rs"]
pub mod hl7_message;
#[path = "mllp.rs"]
pub mod mllp;
#[path = "multipart.rs"]
pub mod multipart;
