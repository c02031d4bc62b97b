//! A bare actix-web JSON echo: the throughput/latency ceiling for `bench/hooks.sh`.
//!
//! `POST /<anything>` with a JSON body gets that body back, parsed with `serde_json` and
//! re-serialised, with `Content-Type: application/json`. There is no auth, no database and no
//! middleware, so it measures what actix-web plus JSON (de)serialisation costs on this machine
//! and nothing else. The benchmark compares radsight's `order-select` hook against it.
//!
//! Run it (port from the first argument, else `ECHO_PORT`, else 18081; 2 workers, like the
//! benchmarked radsight configuration; listens on 127.0.0.1 only):
//!
//! ```text
//! cargo run --release --example json_echo -- 18081
//! curl -s -XPOST -H 'content-type: application/json' -d '{"a":1}' http://127.0.0.1:18081/echo
//! ```

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

/// Same order of magnitude as radsight's hook body limit; the order-select example is ~10 KB.
const BODY_LIMIT: usize = 1024 * 1024;

async fn echo(_req: HttpRequest, body: web::Bytes) -> HttpResponse {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(value) => match serde_json::to_vec(&value) {
            Ok(out) => HttpResponse::Ok().content_type("application/json").body(out),
            Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
        },
        Err(e) => HttpResponse::BadRequest().body(e.to_string()),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("ECHO_PORT").ok())
        .map(|p| p.parse().expect("port must be a number"))
        .unwrap_or(18081);
    eprintln!("json_echo listening on 127.0.0.1:{port} (2 workers)");
    HttpServer::new(|| App::new().app_data(web::PayloadConfig::new(BODY_LIMIT)).default_service(web::post().to(echo)))
        .workers(2)
        .bind(("127.0.0.1", port))?
        .run()
        .await
}
