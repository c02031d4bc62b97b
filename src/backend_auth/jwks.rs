//! `GET /.well-known/jwks.json`: radsight's public signing keys (the active key and the keys
//! retired less than `outputs.retired_key_publish_secs` ago), read from the keyring on each
//! request so a rotation by `radsight keys rotate` is published at once, on every instance that
//! shares the keyring.

use actix_web::{HttpResponse, web};

use crate::keys::keyring::Keyring;
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/.well-known/jwks.json", web::get().to(published));
}

async fn published(state: web::Data<AppState>) -> HttpResponse {
    let keep = state.settings.outputs.retired_key_publish_secs;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let ring = Keyring::open(&state.settings.outputs.keys_dir);
    match web::block(move || ring.published(now, keep)).await {
        Ok(Ok(set)) => {
            HttpResponse::Ok().insert_header(("cache-control", "public, max-age=300")).content_type("application/jwk-set+json").json(set)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the keyring cannot be read; no keys are published");
            HttpResponse::ServiceUnavailable().insert_header(("retry-after", "60")).finish()
        }
        Err(_) => HttpResponse::ServiceUnavailable().finish(),
    }
}
