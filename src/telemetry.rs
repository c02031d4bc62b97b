//! Logging setup. `RUST_LOG` filters (default `info`); `RADSIGHT_LOG_FORMAT=json` for JSON lines.
//! Nothing radsight logs contains tokens, keys or patient data: handlers log codes and ids only.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if std::env::var("RADSIGHT_LOG_FORMAT").as_deref() == Ok("json") { builder.json().try_init() } else { builder.try_init() };
}
