//! The one outbound HTTP client (rustls, no system proxy, no redirects) and bounded body reads.
//!
//! **Boundary:** radsight only calls URLs that the configuration registered (client `jku`s and
//! `fhir_servers`). Redirects are not followed, because a redirect would lead off that list.

use std::time::Duration;

use futures_util::StreamExt;

pub fn build() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(2))
        .user_agent(concat!("radsight/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client configuration is static and valid")
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the response body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the response body could not be read")]
    Read(#[from] reqwest::Error),
}

/// Reads a response body, refusing more than `limit` bytes without buffering them.
pub async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n as usize > limit) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
