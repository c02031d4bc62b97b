//! Refusals by strangers, counted rather than written one by one.
//!
//! Anyone who can reach a port can be refused, as often as they like, and the audit log is
//! permanent. So a refusal before authentication (a bad token, a throttled request, an unknown
//! HL7 sender) is written in full only when it is the first of its key (channel, source, reason)
//! in the current window; later ones are counted, and when the window closes each key with a
//! count writes one `refusal.summary` entry. A flood therefore writes at most two entries per
//! key per window, and nothing is lost for an auditor: over a key's entries, the first ones
//! (count 1 each) plus the summaries' `count`s add up to every refusal seen.
//!
//! The counts of an open window live in memory until [`RefusalTally::flush`] (every window, and
//! at shutdown); a crash loses at most one window's counts, never an entry already written.
//!
//! The number of keys is bounded ([`MAX_KEYS`]): past it, new sources are counted under the
//! source `*`, so an attacker with many addresses cannot grow the map. IPv6 sources are counted
//! by /64, the block one host usually holds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use sea_orm::DatabaseConnection;

use super::{Action, AuditError, AuditEvent, AuditLog, Outcome};

/// Most distinct (channel, source, reason) keys one window counts separately.
pub const MAX_KEYS: usize = 4096;

/// What is refused, where, and why; the reason is one of radsight's stable codes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefusalKey {
    /// `http` or `hl7`.
    pub channel: &'static str,
    /// The source address (IPv6 by /64), or `*` once [`MAX_KEYS`] is reached.
    pub source: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone)]
struct Counter {
    /// Refusals after the first in this window, not yet written.
    more: u64,
    first_seen: String,
    last_seen: String,
}

/// Whether a refusal must be written in full now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The first of its key in this window: write its entry now.
    First,
    /// Counted; it will be in the window's `refusal.summary`.
    Counted,
}

/// The open window's counts; see the module docs.
#[derive(Debug, Default)]
pub struct RefusalTally {
    counts: Mutex<HashMap<RefusalKey, Counter>>,
}

/// The source as counted: IPv4 whole, IPv6 by its /64.
pub fn source_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

impl RefusalTally {
    /// Counts one refusal and says whether it must be written in full now.
    pub fn note(&self, channel: &'static str, source: IpAddr, reason: &'static str) -> Seen {
        let now = super::now_rfc3339();
        let mut counts = self.counts.lock().expect("refusal tally lock");
        let mut key = RefusalKey { channel, source: source_key(source), reason };
        if !counts.contains_key(&key) && counts.len() >= MAX_KEYS {
            key.source = "*".into();
        }
        match counts.get_mut(&key) {
            Some(c) => {
                c.more += 1;
                c.last_seen = now;
                Seen::Counted
            }
            None => {
                counts.insert(key, Counter { more: 0, first_seen: now.clone(), last_seen: now });
                Seen::First
            }
        }
    }

    /// Counts one refusal that is never written in full, only in the window's summary: a write
    /// refused because the log's queue is full (writing it would add to that queue).
    pub fn count_only(&self, channel: &'static str, reason: &'static str) {
        let now = super::now_rfc3339();
        let mut counts = self.counts.lock().expect("refusal tally lock");
        let c = counts.entry(RefusalKey { channel, source: "*".into(), reason }).or_insert_with(|| Counter {
            more: 0,
            first_seen: now.clone(),
            last_seen: now.clone(),
        });
        c.more += 1;
        c.last_seen = now;
    }

    /// Closes the window: writes one `refusal.summary` entry per key counted beyond its first,
    /// and starts a new window. Returns the number of entries written. Counts that could not be
    /// written are put back, so a failed flush loses nothing.
    pub async fn flush(&self, db: &DatabaseConnection, audit: &AuditLog) -> Result<usize, AuditError> {
        let closed: Vec<(RefusalKey, Counter)> =
            std::mem::take(&mut *self.counts.lock().expect("refusal tally lock")).into_iter().collect();
        let mut written = 0;
        let mut pending = closed.into_iter().filter(|(_, c)| c.more > 0);
        while let Some((key, c)) = pending.next() {
            let event = AuditEvent::new(Action::RefusalSummary, Outcome::Denied)
                .detail("channel", key.channel)
                .detail("source", key.source.clone())
                .detail("reason", key.reason)
                .detail("count", c.more)
                .detail("first_seen", c.first_seen.clone())
                .detail("last_seen", c.last_seen.clone());
            if let Err(e) = audit.record(db, event).await {
                let mut counts = self.counts.lock().expect("refusal tally lock");
                for (key, c) in std::iter::once((key, c)).chain(pending) {
                    let slot =
                        counts.entry(key).or_insert(Counter { more: 0, first_seen: c.first_seen.clone(), last_seen: c.last_seen.clone() });
                    slot.more += c.more;
                    slot.first_seen = c.first_seen;
                }
                return Err(e);
            }
            written += 1;
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_a_key_is_written_and_the_rest_counted() {
        let tally = RefusalTally::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(tally.note("http", a, "bad-signature"), Seen::First);
        assert_eq!(tally.note("http", a, "bad-signature"), Seen::Counted);
        assert_eq!(tally.note("http", a, "expired"), Seen::First);
        assert_eq!(tally.note("http", b, "bad-signature"), Seen::First);
        assert_eq!(tally.note("hl7", a, "bad-signature"), Seen::First);
        let counts = tally.counts.lock().unwrap();
        let key = RefusalKey { channel: "http", source: "192.0.2.1".into(), reason: "bad-signature" };
        assert_eq!(counts[&key].more, 1);
    }

    #[test]
    fn ipv6_sources_count_by_their_64_and_mapped_v4_as_v4() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let two: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(source_key(one), "2001:db8:1:2::/64");
        assert_eq!(source_key(one), source_key(two));
        assert_eq!(source_key("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7");
    }

    #[test]
    fn past_the_key_limit_new_sources_share_one_overflow_key() {
        let tally = RefusalTally::default();
        for i in 0..MAX_KEYS as u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(tally.note("http", ip, "bad-signature"), Seen::First);
        }
        let late: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(tally.note("http", late, "bad-signature"), Seen::First, "the overflow key is new");
        assert_eq!(tally.note("http", "198.51.100.2".parse().unwrap(), "bad-signature"), Seen::Counted);
        let counts = tally.counts.lock().unwrap();
        assert_eq!(counts.len(), MAX_KEYS + 1);
        assert!(counts.contains_key(&RefusalKey { channel: "http", source: "*".into(), reason: "bad-signature" }));
    }
}
