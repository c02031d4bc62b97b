//! Authentication of callers: CDS client and auditor JWTs (`client_jwt`, with their keys in
//! `jwks`), and the signed, expiring links that cards carry to results (`links`).

pub mod client_jwt;
pub mod jwks;
pub mod links;
