//! CDS Hooks 2.0 cards as radsight sends them. Optional fields with no value are left out,
//! never sent as `null` or empty, as the specification asks.

use serde::Serialize;
use serde_json::Value;

pub const OVERRIDE_REASON_SYSTEM: &str = "urn:radsight:cds:override-reason";
pub const RULE_TOPIC_SYSTEM: &str = "urn:radsight:cds:rule";
pub const MODEL_TOPIC_SYSTEM: &str = "urn:radsight:model";
/// The card summary limit: the specification says fewer than 140 characters.
const SUMMARY_MAX_CHARS: usize = 139;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Indicator {
    Info,
    Warning,
    Critical,
}

impl Indicator {
    pub fn as_str(self) -> &'static str {
        match self {
            Indicator::Info => "info",
            Indicator::Warning => "warning",
            Indicator::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Coding {
    pub system: String,
    pub code: String,
    pub display: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Coding {
    pub fn new(system: &str, code: &str, display: &str) -> Coding {
        Coding { system: system.into(), code: code.into(), display: display.into(), version: None }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<Coding>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum ActionType {
    Create,
    Update,
    Delete,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    #[serde(rename = "type")]
    pub kind: ActionType,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<Value>,
    /// A relative reference (`ServiceRequest/123`), for `delete`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Suggestion {
    pub label: String,
    pub uuid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_recommended: Option<bool>,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum LinkType {
    Absolute,
    Smart,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    pub label: String,
    pub url: String,
    #[serde(rename = "type")]
    pub kind: LinkType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_context: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Card {
    pub uuid: String,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub indicator: Indicator,
    pub source: Source,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<Suggestion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection_behavior: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub override_reasons: Vec<Coding>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    /// CDS Hooks extension: `org.radsight.audit` names the audit-log leaf that records this
    /// card being served, so an auditor can request its inclusion proof.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extension: Option<serde_json::Value>,
}

/// The extension key under which a card carries its audit-log position.
pub const AUDIT_EXTENSION: &str = "org.radsight.audit";

/// What produced a card: kept with the stored card so auditors can trace it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `rule` or `model` or `status` (an analysis-pending notice).
    pub kind: &'static str,
    pub id: String,
    pub version: String,
}

/// A card together with its provenance and the order or study it concerns.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuedCard {
    pub card: Card,
    pub origin: Origin,
}

impl Card {
    pub fn new(summary: &str, indicator: Indicator, source: Source) -> Card {
        Card {
            uuid: uuid::Uuid::new_v4().to_string(),
            summary: truncate_summary(summary),
            detail: None,
            indicator,
            source,
            suggestions: Vec::new(),
            selection_behavior: None,
            override_reasons: Vec::new(),
            links: Vec::new(),
            extension: None,
        }
    }

    /// Gives the card the uuid it is served under (its call's and its place's:
    /// `store::served_cards::card_uuid`), and its suggestions the uuids derived from it.
    pub fn serve_as(&mut self, uuid: String) {
        self.uuid = uuid;
        for (i, s) in self.suggestions.iter_mut().enumerate() {
            s.uuid = suggestion_uuid(&self.uuid, i);
        }
    }

    /// Records which audit entry (sequence number; leaf index = seq − 1) served this card.
    pub fn audited_as(&mut self, seq: i64) {
        self.extension = Some(serde_json::json!({ AUDIT_EXTENSION: { "seq": seq, "leafIndex": seq - 1 } }));
    }

    pub fn detail(mut self, markdown: String) -> Card {
        self.detail = Some(markdown);
        self
    }

    /// Adds a suggestion; cards with suggestions must say how many may be chosen.
    pub fn suggest(mut self, label: &str, recommended: bool, actions: Vec<Action>) -> Card {
        self.suggestions.push(Suggestion {
            label: label.into(),
            uuid: suggestion_uuid(&self.uuid, self.suggestions.len()),
            is_recommended: recommended.then_some(true),
            actions,
        });
        self.selection_behavior = Some("at-most-one");
        self
    }

    pub fn override_reasons(mut self, reasons: Vec<Coding>) -> Card {
        self.override_reasons = reasons;
        self
    }

    pub fn link(mut self, link: Link) -> Card {
        self.links.push(link);
        self
    }
}

/// A suggestion's uuid: derived from its card's uuid and its place on the card, so it is as
/// unique as the card served, yet the card's stored content need not hold it (see
/// `stored_card`).
pub fn suggestion_uuid(card_uuid: &str, index: usize) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("radsight-suggestion-v1\n{card_uuid}\n{index}"));
    let bytes: [u8; 16] = digest[..16].try_into().expect("a SHA-256 digest has 32 bytes");
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

fn truncate_summary(s: &str) -> String {
    if s.chars().count() <= SUMMARY_MAX_CHARS {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(SUMMARY_MAX_CHARS - 1).collect();
    out.push('…');
    out
}

/// The override reasons offered on every safety card.
pub fn standard_override_reasons() -> Vec<Coding> {
    [
        ("benefit-outweighs-risk", "Clinical benefit outweighs the risk"),
        ("already-addressed", "Already addressed (premedication, hydration or consultation)"),
        ("information-outdated", "The information shown is outdated or incorrect"),
        ("patient-preference", "Discussed with the patient, who wishes to proceed"),
    ]
    .into_iter()
    .map(|(code, display)| Coding::new(OVERRIDE_REASON_SYSTEM, code, display))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_stay_under_140_characters_and_empty_fields_are_omitted() {
        let card = Card::new(&"x".repeat(300), Indicator::Info, Source { label: "radsight".into(), url: None, topic: None });
        assert!(card.summary.chars().count() < 140);
        let json = serde_json::to_value(&card).unwrap();
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["indicator", "source", "summary", "uuid"]);
        assert_eq!(json["source"], serde_json::json!({"label": "radsight"}));
    }

    #[test]
    fn a_suggestion_sets_the_selection_behavior() {
        let card = Card::new("s", Indicator::Warning, Source { label: "r".into(), url: None, topic: None }).suggest(
            "Remove",
            true,
            vec![Action {
                kind: ActionType::Delete,
                description: "d".into(),
                resource: None,
                resource_id: Some("ServiceRequest/1".into()),
            }],
        );
        let json = serde_json::to_value(&card).unwrap();
        assert_eq!(json["selectionBehavior"], "at-most-one");
        assert_eq!(json["suggestions"][0]["actions"][0]["resourceId"], "ServiceRequest/1");
        assert_eq!(json["suggestions"][0]["actions"][0]["type"], "delete");
    }
}
