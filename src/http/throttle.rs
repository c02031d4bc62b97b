//! Rate limits at the edge: per source address (every route but the health checks, before any
//! token is verified), per authenticated CDS client, and on the studies a client announces by
//! FHIR notification. Each is a keyed GCRA limiter (`governor`) from `[limits]`; 0 turns one off.
//!
//! A throttled request gets 429 with `Retry-After` (whole seconds, rounded up) and an
//! `OperationOutcome` `throttled`. It is a refusal by a stranger (or a client over its share), so
//! it is audited through the refusal tally (`http.throttled`, counted per source and window).
//!
//! Limits are per instance: N instances behind a balancer admit up to N times the rate.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, ResponseError, web};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::HttpError;
use crate::audit::{Action, AuditEvent, Outcome};
use crate::configuration::LimitSettings;
use crate::state::AppState;

/// The instance's rate limiters (registered as `web::Data<Throttle>`).
pub struct Throttle {
    per_source: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_client: Option<DefaultKeyedRateLimiter<String>>,
    studies_per_client: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

/// Over a limit: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for the `Retry-After` header, at least 1.
    pub fn secs(self) -> u64 {
        (self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)).max(1)
    }
}

fn limiter<K: Clone + std::hash::Hash + Eq>(per: Quota) -> DefaultKeyedRateLimiter<K> {
    governor::RateLimiter::keyed(per)
}

fn per_second(rate: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    Some(Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate)))
}

impl Throttle {
    pub fn from_settings(s: &LimitSettings) -> Throttle {
        Throttle {
            per_source: per_second(s.per_source_per_second, s.per_source_burst).map(limiter),
            per_client: per_second(s.per_client_per_second, s.per_client_burst).map(limiter),
            studies_per_client: NonZeroU32::new(s.studies_per_client_per_minute).map(|n| limiter(Quota::per_minute(n))),
            clock: DefaultClock::default(),
        }
    }

    fn check<K: Clone + std::hash::Hash + Eq>(&self, l: &Option<DefaultKeyedRateLimiter<K>>, key: &K) -> Result<(), RetryAfter> {
        match l {
            Some(l) => l.check_key(key).map_err(|not_until| RetryAfter(not_until.wait_time_from(self.clock.now()))),
            None => Ok(()),
        }
    }

    pub fn check_source(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        self.check(&self.per_source, &ip)
    }

    pub fn check_client(&self, iss: &str) -> Result<(), RetryAfter> {
        self.check(&self.per_client, &iss.to_owned())
    }

    /// Takes `n` studies from the client's per-minute allowance; more than a whole minute's
    /// allowance at once is refused for a minute.
    pub fn check_studies(&self, iss: &str, n: usize) -> Result<(), RetryAfter> {
        let (Some(l), Some(n)) = (&self.studies_per_client, NonZeroU32::new(n.min(u32::MAX as usize) as u32)) else {
            return Ok(());
        };
        match l.check_key_n(&iss.to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(RetryAfter(not_until.wait_time_from(self.clock.now()))),
            Err(_) => Err(RetryAfter(Duration::from_secs(60))),
        }
    }

    /// Forgets keys whose state is indistinguishable from a fresh one, so the maps hold only
    /// recent sources and clients.
    pub fn retain_recent(&self) {
        if let Some(l) = &self.per_source {
            l.retain_recent();
        }
        if let Some(l) = &self.per_client {
            l.retain_recent();
        }
        if let Some(l) = &self.studies_per_client {
            l.retain_recent();
        }
    }
}

/// The 429 answer: `Retry-After` and an OperationOutcome `throttled`.
pub fn too_many_requests(retry: RetryAfter, what: &str) -> HttpError {
    HttpError::TooManyRequests { retry_after_secs: retry.secs(), diagnostics: format!("too many requests {what}; try again later") }
}

/// Audits a throttled request (counted per source and reason) and gives the 429.
pub async fn refuse_throttled(req: &HttpRequest, state: &AppState, reason: &'static str, retry: RetryAfter, what: &str) -> HttpError {
    let event = AuditEvent::new(Action::Throttled, Outcome::Denied).detail("reason", reason).detail("path", req.path());
    match state.audit.record_refusal(&state.db, "http", super::client_auth::source(req), reason, event).await {
        Ok(()) => too_many_requests(retry, what),
        Err(e) => HttpError::internal(e),
    }
}

/// Middleware: the per-source limit on every route but `/healthz` and `/readyz` (orchestrators
/// poll those, and they reveal nothing).
pub async fn limit_sources(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let exempt = matches!(req.path(), "/healthz" | "/readyz");
    let throttle = req.app_data::<web::Data<Throttle>>().cloned();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    if let (false, Some(throttle), Some(state), Some(peer)) = (exempt, throttle, state, req.peer_addr())
        && let Err(retry) = throttle.check_source(peer.ip())
    {
        let err = refuse_throttled(req.request(), &state, "source-rate-limit", retry, "from this address").await;
        return Ok(req.into_response(err.error_response()));
    }
    next.call(req).await.map(ServiceResponse::map_into_boxed_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_never_zero() {
        assert_eq!(RetryAfter(Duration::from_millis(1)).secs(), 1);
        assert_eq!(RetryAfter(Duration::ZERO).secs(), 1);
        assert_eq!(RetryAfter(Duration::from_millis(2001)).secs(), 3);
        assert_eq!(RetryAfter(Duration::from_secs(2)).secs(), 2);
    }

    #[test]
    fn a_source_over_its_burst_is_throttled_and_others_are_not() {
        let t = Throttle::from_settings(&LimitSettings { per_source_per_second: 1, per_source_burst: 3, ..LimitSettings::default() });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(t.check_source(a).is_ok());
        }
        let retry = t.check_source(a).unwrap_err();
        assert!(retry.0 > Duration::ZERO && retry.0 <= Duration::from_secs(1), "{retry:?}");
        assert!(t.check_source("192.0.2.2".parse().unwrap()).is_ok());
    }

    #[test]
    fn a_zero_limit_is_off_and_studies_count_by_the_study() {
        let t = Throttle::from_settings(&LimitSettings {
            per_source_per_second: 0,
            studies_per_client_per_minute: 10,
            ..LimitSettings::default()
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!((0..10_000).all(|_| t.check_source(a).is_ok()));
        assert!(t.check_studies("https://ehr", 6).is_ok());
        assert!(t.check_studies("https://ehr", 6).is_err(), "12 studies in a minute, 10 allowed");
        assert!(t.check_studies("https://other", 4).is_ok());
        assert_eq!(t.check_studies("https://new", 11).unwrap_err(), RetryAfter(Duration::from_secs(60)));
    }
}
