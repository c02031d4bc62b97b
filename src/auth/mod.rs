//! Authentication of callers: CDS clients (and, later, SMART tokens).

pub mod client_jwt;
pub mod jwks;
