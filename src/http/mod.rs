//! The edge layer: what every HTTP feature shares between actix-web and the core.
//!
//! - `error`: [`HttpError`], the one error type handlers answer with. It renders a FHIR
//!   `OperationOutcome` (or a bare 401 for an authentication failure, whose reason is only in
//!   the audit trail) and logs an internal error's chain once.
//! - `client_auth`: verifying a client JWT (CDS clients, auditors) against the exact URL called,
//!   auditing every refusal (`auth.reject`), the [`client_auth::CdsClient`] extractor, and
//!   [`client_auth::audit_failures`], which audits what fails after authentication.
//! - `body`: reading a request body under a size limit, and parsing it as JSON.
//! - `throttle`: rate limits per source address, per client and on announced studies (429).
//! - `access_log`: the request path as the access log may show it (patient ids redacted).
//!
//! **Boundary:** the edge depends only on the core (`state`, `audit`, `auth`, `configuration`);
//! features build on it, and it never names a feature.

pub mod access_log;
pub mod body;
pub mod client_auth;
pub mod error;
pub mod throttle;

pub use error::HttpError;
