//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: the database answers and
//! the instance is not draining for shutdown).

use actix_web::{HttpResponse, web};
use sea_orm::ConnectionTrait;

use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(|| async { HttpResponse::Ok().json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", web::get().to(ready));
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    if state.shutdown.is_draining() {
        return HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "shutting down"}));
    }
    match state.db.execute_unprepared("SELECT 1").await {
        Ok(_) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "database unavailable"}))
        }
    }
}
