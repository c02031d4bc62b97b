//! [`AppState`]: the core handles every HTTP feature shares. Start-up builds it once; features
//! receive it (`web::Data<AppState>`) and never reach back into start-up. A feature's own
//! state (the hooks' service definitions and FHIR fetcher, the SMART app's token validator) is
//! registered beside it as its own `web::Data`.

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::audit::AuditLog;
use crate::audit::checkpoint::CheckpointSigner;
use crate::auth::client_jwt::ClientVerifier;
use crate::auth::links::LinkSigner;
use crate::configuration::Settings;

pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: DatabaseConnection,
    pub audit: AuditLog,
    /// Verifies CDS clients (and FHIR notification senders).
    pub verifier: ClientVerifier,
    /// Verifies auditor clients (a separate registry from CDS clients).
    pub auditors: ClientVerifier,
    pub checkpoint_signer: Arc<CheckpointSigner>,
    /// Wakes idle job workers of this instance when a job is queued.
    pub wake: Arc<tokio::sync::Notify>,
    /// Signs and checks the result links that cards carry.
    pub links: LinkSigner,
}
