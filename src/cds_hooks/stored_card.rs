//! A served card split into what repeats from call to call and what does not, so that what
//! repeats is stored once.
//!
//! The same rule fires on the same patient's order at every call, and the same stored result
//! gives the same card, so most cards served are repeats. Their content is stored once in
//! `card_contents`, keyed by its SHA-256, with its origin; the ordered list of a call's content
//! hashes once in `card_sets`, keyed by their digest; and each call as one `hook_calls` row
//! under its audit entry's key, naming that list (`store::served_cards`, which also makes each
//! card's uuid from the entry's key, a random token and the card's place). The content leaves
//! out what differs per call:
//! - the card's `uuid`, the CDS client's handle for feedback (made from its call's);
//! - its suggestions' uuids, which derive from the card's uuid ([`super::cards::suggestion_uuid`]);
//! - the `org.radsight.audit` extension, which is the call's `audit_seq`;
//! - the `exp` and `sig` of a signed link: a bearer credential, which is never stored.
//!
//! The hash covers the card's origin (rule, model or status; id; version) as well as its JSON,
//! and the hook call's audit entry commits to the hashes of the cards it served, in the order
//! served, through one digest (`cards_content`, [`served_digest`], also the `card_sets` key):
//! the log commits to exactly what was shown and what produced it, for 64 characters per call.
//! An auditor recomputes
//! - each card's hash as `sha256("radsight-card-content-v1\n" kind "\n" id "\n" version "\n"
//!   content_json)` from its stored content and origin (`card_contents`);
//! - the digest as `sha256("radsight-cards-served-v1" ("\n" hash)*)` over the call's list.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::cards::{Card, Origin};

/// A card's content as stored, and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredContent {
    /// SHA-256 of the origin and the content, lowercase hex.
    pub hash: String,
    /// The card's JSON without its per-call parts.
    pub json: String,
}

impl StoredContent {
    pub fn of(card: &Card, origin: &Origin) -> StoredContent {
        let mut value = serde_json::to_value(card).expect("cards serialise");
        strip_per_call(&mut value);
        let json = value.to_string();
        StoredContent { hash: content_hash(origin, &json), json }
    }
}

pub fn content_hash(origin: &Origin, json: &str) -> String {
    let mut h = Sha256::new();
    h.update(format!("radsight-card-content-v1\n{}\n{}\n{}\n", origin.kind, origin.id, origin.version));
    h.update(json.as_bytes());
    hex::encode(h.finalize())
}

/// The digest a hook call's audit entry records over the content hashes of its cards, in the
/// order served.
pub fn served_digest<'a>(hashes: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    h.update(b"radsight-cards-served-v1");
    for hash in hashes {
        h.update(b"\n");
        h.update(hash.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Removes from a served card's JSON what differs from one serving to the next.
fn strip_per_call(card: &mut Value) {
    let Some(card) = card.as_object_mut() else { return };
    card.remove("uuid");
    card.remove("extension");
    if let Some(suggestions) = card.get_mut("suggestions").and_then(Value::as_array_mut) {
        suggestions.iter_mut().filter_map(Value::as_object_mut).for_each(|s| drop(s.remove("uuid")));
    }
    if let Some(links) = card.get_mut("links").and_then(Value::as_array_mut) {
        for url in links.iter_mut().filter_map(|l| l.get_mut("url")) {
            if let Some(bare) = url.as_str().and_then(without_credential) {
                *url = Value::String(bare);
            }
        }
    }
}

/// The URL without its `exp` and `sig` query parameters, if it has either.
fn without_credential(url: &str) -> Option<String> {
    let mut parsed = url::Url::parse(url).ok()?;
    if !parsed.query_pairs().any(|(k, _)| k == "exp" || k == "sig") {
        return None;
    }
    let kept: Vec<(String, String)> =
        parsed.query_pairs().filter(|(k, _)| k != "exp" && k != "sig").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    Some(parsed.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cds_hooks::cards::{Action, ActionType, Indicator, Link, LinkType, Source};

    fn origin() -> Origin {
        Origin { kind: "rule", id: "contrast-allergy".into(), version: "1".into() }
    }

    fn card() -> Card {
        Card::new("Contrast allergy", Indicator::Warning, Source { label: "radsight".into(), url: None, topic: None })
            .suggest("Remove", true, vec![Action { kind: ActionType::Delete, description: "d".into(), resource: None, resource_id: None }])
            .link(Link {
                label: "Saliency".into(),
                url: "https://r.example/results/r1/saliency.png?exp=1700000000&sig=abc".into(),
                kind: LinkType::Absolute,
                app_context: None,
            })
    }

    #[test]
    fn two_servings_of_one_card_share_their_content_and_hash() {
        let (mut a, b) = (card(), card());
        a.audited_as(41);
        assert_ne!(a.uuid, b.uuid);
        assert_ne!(a.suggestions[0].uuid, b.suggestions[0].uuid);
        let (sa, sb) = (StoredContent::of(&a, &origin()), StoredContent::of(&b, &origin()));
        assert_eq!(sa, sb);
        let json: Value = serde_json::from_str(&sa.json).unwrap();
        assert!(json.get("uuid").is_none() && json.get("extension").is_none());
        assert!(json["suggestions"][0].get("uuid").is_none());
        assert_eq!(json["links"][0]["url"], "https://r.example/results/r1/saliency.png", "no credential is stored");
    }

    #[test]
    fn the_hash_covers_the_origin_and_every_word_of_the_content() {
        let base = StoredContent::of(&card(), &origin());
        let other_version = Origin { version: "2".into(), ..origin() };
        assert_ne!(StoredContent::of(&card(), &other_version).hash, base.hash);
        let mut reworded = card();
        reworded.summary.push('!');
        assert_ne!(StoredContent::of(&reworded, &origin()).hash, base.hash);
        assert_eq!(base.hash.len(), 64);
    }

    #[test]
    fn the_digest_depends_on_every_hash_and_their_order() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let ab = served_digest([a.as_str(), b.as_str()]);
        assert_ne!(ab, served_digest([b.as_str(), a.as_str()]));
        assert_ne!(ab, served_digest([a.as_str()]));
        assert_ne!(served_digest([]), served_digest([""]));
    }

    #[test]
    fn other_query_parameters_stay() {
        assert_eq!(without_credential("https://x.example/p?a=1&exp=2&sig=3").as_deref(), Some("https://x.example/p?a=1"));
        assert_eq!(without_credential("https://x.example/p?a=1"), None);
        assert_eq!(without_credential("not a url"), None);
    }
}
