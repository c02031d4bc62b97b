//! Serving the app: `/smart/launch` (the EHR launch URL), `/smart/` (the built app, also the
//! OAuth redirect URI) and `/smart/error` (the clear pages for launches that cannot go on).
//!
//! `/smart/launch` refuses an `iss` that is not a registered EHR before any script runs, so the
//! app never talks to an unknown authorisation server; for a registered one it serves the
//! launch page with that EHR's `client_id` and scopes. The rest of the launch (discovery,
//! PKCE, state, token) happens in the browser with `fhirclient`.

use std::path::{Component, Path, PathBuf};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::SmartState;
use crate::audit::{Action, AuditEvent, Outcome};
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/smart", web::get().to(|| async { HttpResponse::PermanentRedirect().insert_header(("location", "/smart/")).finish() }))
        .route("/smart/launch", web::get().to(launch))
        .route("/smart/error", web::get().to(error))
        .route("/smart/{file:.*}", web::get().to(app_file));
}

/// A reason the launch stopped, with what to tell the user and the status the page answers with.
struct Problem {
    status: StatusCode,
    title: &'static str,
    text: &'static str,
    next: &'static str,
}

fn problem(code: &str) -> Problem {
    match code {
        "unknown-iss" => Problem {
            status: StatusCode::FORBIDDEN,
            title: "This EHR is not registered with radsight",
            text: "radsight was opened by a system it does not know, so it did not start. Only EHRs that your organisation has registered with radsight can open it.",
            next: "Open radsight again from your EHR. If this keeps happening, ask your EHR or radsight administrator to register this EHR.",
        },
        "missing-iss" => Problem {
            status: StatusCode::BAD_REQUEST,
            title: "radsight must be opened from the EHR",
            text: "The launch did not say which EHR opened radsight (no iss parameter).",
            next: "Open radsight from the patient's chart or from a card in your EHR.",
        },
        "missing-launch" => Problem {
            status: StatusCode::BAD_REQUEST,
            title: "radsight must be opened from the EHR",
            text: "The launch did not carry the EHR's launch context (no launch parameter).",
            next: "Open radsight from the patient's chart or from a card in your EHR.",
        },
        "access-denied" => Problem {
            status: StatusCode::FORBIDDEN,
            title: "Access was not granted",
            text: "The EHR did not give radsight access to this patient's record (consent was denied or the request was refused). No patient data was read.",
            next: "If you meant to allow access, open radsight again from the chart and approve the request.",
        },
        "invalid-state" => Problem {
            status: StatusCode::BAD_REQUEST,
            title: "This launch has expired or is not valid",
            text: "radsight could not match this sign-in to a launch it started: the launch is too old, was already completed, or came from another browser window.",
            next: "Open radsight again from the patient's chart.",
        },
        "unreachable-iss" => Problem {
            status: StatusCode::BAD_GATEWAY,
            title: "The EHR could not be reached",
            text: "radsight could not contact the EHR's authorisation server to sign you in.",
            next: "Check the network and try again in a moment. If it keeps failing, contact your EHR support.",
        },
        "missing-patient" => Problem {
            status: StatusCode::BAD_REQUEST,
            title: "No patient is selected",
            text: "The EHR opened radsight without a patient in context, so there is nothing to show.",
            next: "Open a patient's chart first, then open radsight from it.",
        },
        "token-failed" => Problem {
            status: StatusCode::UNAUTHORIZED,
            title: "Sign-in could not be completed",
            text: "The EHR refused to issue an access token for this launch.",
            next: "Open radsight again from the patient's chart.",
        },
        "session-ended" => Problem {
            status: StatusCode::UNAUTHORIZED,
            title: "Your session has ended",
            text: "The EHR no longer accepts this session's access (it expired or was revoked), so radsight stopped showing patient data.",
            next: "Open radsight again from the patient's chart.",
        },
        "not-built" => Problem {
            status: StatusCode::SERVICE_UNAVAILABLE,
            title: "The radsight app is not installed",
            text: "This radsight server has no built SMART app to serve.",
            next: "An administrator must build it: npm --prefix smart-app ci && npm --prefix smart-app run build.",
        },
        _ => Problem {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            title: "radsight could not start",
            text: "Something went wrong while opening radsight.",
            next: "Open radsight again from the patient's chart. If this keeps happening, contact support.",
        },
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The error page: self-contained, readable at 200 % zoom, no scripts.
pub fn error_page(status: actix_web::http::StatusCode, code: &str) -> HttpResponse {
    let p = problem(code);
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("cache-control", "no-store"))
        .insert_header(("referrer-policy", "no-referrer"))
        .insert_header(("content-security-policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:"))
        .body(format!(
            r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>radsight: {title}</title><link rel="icon" href="data:,"><style>body{{font:1rem/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#1a1a1a}}
h1{{font-size:1.5rem}}.box{{border-left:.4rem solid #b3261e;padding:.5rem 1rem;background:#fdf3f2}}code{{background:#eee}}</style></head>
<body><main><p>radsight</p><div class="box" role="alert"><h1 id="error-title">{title}</h1><p>{text}</p></div>
<h2>What to do</h2><p>{next}</p><p><small>Reference: <code id="error-code">{code}</code></small></p></main></body></html>"#,
            title = escape(p.title),
            text = escape(p.text),
            next = escape(p.next),
            code = escape(code),
        ))
}

#[derive(Deserialize)]
struct LaunchQuery {
    iss: Option<String>,
    launch: Option<String>,
}

async fn launch(q: web::Query<LaunchQuery>, state: web::Data<AppState>, smart: web::Data<SmartState>) -> HttpResponse {
    let Some(iss) = q.iss.as_deref().filter(|i| !i.is_empty()) else {
        return error_page(actix_web::http::StatusCode::BAD_REQUEST, "missing-iss");
    };
    let Some(ehr) = smart.tokens.ehr(iss) else {
        // Audited without the claimed URL: it is not a registered reference.
        let event = AuditEvent::new(Action::SmartLaunch, Outcome::Denied).detail("reason", "unknown-iss");
        if let Err(e) = state.audit.record(&state.db, event).await {
            tracing::error!(error = ?e, "could not audit a refused SMART launch");
            return error_page(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR, "internal");
        }
        return error_page(actix_web::http::StatusCode::FORBIDDEN, "unknown-iss");
    };
    let Ok(template) = std::fs::read_to_string(state.settings.smart.app_dir.join("launch.html")) else {
        return error_page(actix_web::http::StatusCode::SERVICE_UNAVAILABLE, "not-built");
    };
    // The launch starts here; it completes in the browser (code and token go between the app and
    // the EHR), and the app's first API call, audited as a patient-data read, shows it did.
    let event = AuditEvent::new(Action::SmartLaunch, Outcome::Success).actor(Some(&ehr.iss), None).detail("stage", "started");
    if let Err(e) = state.audit.record(&state.db, event).await {
        tracing::error!(error = ?e, "could not audit a SMART launch");
        return error_page(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR, "internal");
    }
    let config = json!({
        "iss": ehr.iss,
        "launch": q.launch,
        "clientId": ehr.client_id,
        "scope": ehr.scopes,
        "redirectUri": format!("{}/smart/", state.settings.server.public_url),
    });
    // `<` escaped so the JSON cannot close the script element.
    let html = template.replace("__RADSIGHT_LAUNCH_CONFIG__", &config.to_string().replace('<', "\\u003c"));
    page(html, &smart.frame_ancestors)
}

fn page(html: String, frame_ancestors: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("cache-control", "no-store"))
        .insert_header(("referrer-policy", "no-referrer"))
        .insert_header((
            "content-security-policy",
            format!(
                "default-src 'self'; img-src 'self' data: blob:; connect-src 'self' http: https:; script-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors {frame_ancestors}"
            ),
        ))
        .body(html)
}

#[derive(Deserialize)]
struct ErrorQuery {
    reason: Option<String>,
}

/// The page the app sends the browser to when a launch cannot go on: an error status, so that
/// nothing (a proxy, a monitor, the EHR's frame) takes it for a working app.
async fn error(q: web::Query<ErrorQuery>) -> HttpResponse {
    let code = q.reason.as_deref().unwrap_or("internal");
    error_page(problem(code).status, code)
}

/// A file of the built app; `..` and absolute components are refused.
fn app_path(dir: &Path, file: &str) -> Option<PathBuf> {
    let file = if file.is_empty() { "index.html" } else { file };
    let rel = Path::new(file);
    rel.components().all(|c| matches!(c, Component::Normal(_))).then(|| dir.join(rel))
}

fn media_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

async fn app_file(path: web::Path<String>, state: web::Data<AppState>, smart: web::Data<SmartState>) -> HttpResponse {
    let dir = &state.settings.smart.app_dir;
    if !dir.join("index.html").is_file() {
        return error_page(actix_web::http::StatusCode::SERVICE_UNAVAILABLE, "not-built");
    }
    let Some(file) = app_path(dir, &path) else { return HttpResponse::NotFound().finish() };
    match std::fs::read(&file) {
        Ok(bytes) if media_type(&file).starts_with("text/html") => {
            page(String::from_utf8_lossy(&bytes).into_owned(), &smart.frame_ancestors)
        }
        Ok(bytes) => HttpResponse::Ok().content_type(media_type(&file)).insert_header(("cache-control", "no-cache")).body(bytes),
        Err(_) => HttpResponse::NotFound().content_type("text/plain").body("not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_paths_stay_inside_the_app_directory() {
        let dir = Path::new("/srv/app");
        assert_eq!(app_path(dir, ""), Some(PathBuf::from("/srv/app/index.html")));
        assert_eq!(app_path(dir, "js/app.js"), Some(PathBuf::from("/srv/app/js/app.js")));
        assert_eq!(app_path(dir, "../secret"), None);
        assert_eq!(app_path(dir, "/etc/passwd"), None);
        assert_eq!(app_path(dir, "a/../../b"), None);
    }
}
