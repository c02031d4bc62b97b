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
    /// Set when the instance drains for shutdown (`/readyz` answers 503 from then on).
    pub shutdown: Shutdown,
}

/// The instance's shutdown: once begun, readiness fails, the MLLP listener takes no new
/// connection or message, and workers claim no new job. Cheap to clone; every clone sees it.
#[derive(Clone, Debug)]
pub struct Shutdown(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown(Arc::new(tokio::sync::watch::channel(false).0))
    }
}

impl Shutdown {
    /// Starts draining; idempotent.
    pub fn begin(&self) {
        self.0.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once draining has begun (at once if it has).
    pub async fn begun(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|draining| *draining).await;
    }
}
