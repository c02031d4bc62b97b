//! Imaging safety and appropriateness rules: checks that need no model, made on the draft
//! orders against the patient's prefetched (or fetched) data.
//!
//! Each rule has an id and a version that travel with its card (`source.topic`), is switched
//! off by listing its id in `rules.disabled`, and reads its thresholds from [`RuleSettings`].
//!
//! Each rule also states which prefetch slots it needs (`needs`) and which orders it applies to
//! (`applies`). When a needed slot's data could not be used or fetched (see `prefetch`), the
//! rule does not run on partial data: for every order it applies to, a warning card says that
//! the check could not run and why. A safety check never disappears without a card.

mod contrast_allergy;
mod duplicate_order;
mod missing_reason;
mod pregnancy;
mod renal_function;

use radsight_fhir::ServiceRequest;
use time::OffsetDateTime;

use super::cards::{Action, ActionType, Card, Coding, Indicator, IssuedCard, Origin, RULE_TOPIC_SYSTEM, Source};
use super::prefetch::{ClinicalData, Unusable, UnusableSlot};
use crate::configuration::RuleSettings;
use crate::imaging::procedure::ImagingProcedure;

/// Everything a rule may look at for one draft order.
pub struct RuleInput<'a> {
    pub order: &'a ServiceRequest,
    pub procedure: &'a ImagingProcedure,
    pub data: &'a ClinicalData,
    pub settings: &'a RuleSettings,
    pub now: OffsetDateTime,
}

impl RuleInput<'_> {
    /// How the order is named on a card.
    pub fn order_label(&self) -> String {
        self.order.code.as_ref().and_then(|c| c.labels().next()).map(str::to_owned).unwrap_or_else(|| "This imaging order".to_owned())
    }

    pub fn within_days(&self, when: Option<OffsetDateTime>, days: i64) -> bool {
        when.is_some_and(|t| t <= self.now + time::Duration::minutes(5) && self.now - t <= time::Duration::days(days))
    }
}

/// A rule's identity, shown in `source.topic` and stored with every card it produces.
pub struct Rule {
    pub id: &'static str,
    pub version: &'static str,
    pub title: &'static str,
    /// The prefetch slots the rule reads, each with what it is in words, for the card that
    /// says the check could not run.
    pub needs: &'static [(&'static str, &'static str)],
    /// Whether the rule concerns this order at all (e.g. only contrast examinations).
    pub applies: fn(&RuleInput) -> bool,
    pub check: fn(&RuleInput, &Rule) -> Option<Card>,
}

pub const RULES: &[Rule] = &[duplicate_order::RULE, contrast_allergy::RULE, renal_function::RULE, pregnancy::RULE, missing_reason::RULE];

impl Rule {
    pub fn card(&self, summary: &str, indicator: Indicator) -> Card {
        let mut topic = Coding::new(RULE_TOPIC_SYSTEM, self.id, self.title);
        topic.version = Some(self.version.to_owned());
        Card::new(summary, indicator, Source { label: "radsight imaging safety rules".into(), url: None, topic: Some(topic) })
    }
}

/// Runs every enabled rule on every imaging order.
pub fn evaluate(
    orders: &[(ServiceRequest, ImagingProcedure)],
    data: &ClinicalData,
    settings: &RuleSettings,
    now: OffsetDateTime,
) -> Vec<IssuedCard> {
    let mut cards = Vec::new();
    for (order, procedure) in orders {
        let input = RuleInput { order, procedure, data, settings, now };
        for rule in RULES.iter().filter(|r| !settings.disabled.contains(r.id)) {
            let blocked = rule.needs.iter().find_map(|(key, what)| data.unusable(key).map(|u| (u, *what)));
            let card = match blocked {
                Some((slot, what)) if (rule.applies)(&input) => Some(not_checked(&input, rule, slot, what)),
                Some(_) => None,
                None => (rule.check)(&input, rule),
            };
            if let Some(card) = card {
                let origin = Origin { kind: "rule", id: rule.id.to_owned(), version: rule.version.to_owned() };
                cards.push(IssuedCard { card, origin });
            }
        }
    }
    cards
}

/// The card for a rule that could not run because the data it needs was unusable.
fn not_checked(input: &RuleInput, rule: &Rule, slot: &UnusableSlot, what: &str) -> Card {
    let why = match &slot.why {
        Unusable::QueryFailed => format!("the EHR reported that its query for the {what} failed"),
        Unusable::WrongType { expected, found } => format!("the EHR sent a {found} resource in place of the {what} ({expected})"),
        Unusable::WrongPatient => format!("the EHR sent the {what} of another patient"),
    };
    let fetched = if slot.fetch_failed { " radsight could not read it from the EHR's FHIR server either." } else { "" };
    let summary = format!("{} could not be checked for {}", rule.title, input.order_label());
    let summary: String = summary.chars().take(139).collect();
    rule.card(&summary, Indicator::Warning).detail(format!(
        "radsight could not run the **{}** check: {why}.{fetched}\n\nCheck the {what} yourself before this order goes ahead.",
        rule.title
    ))
}

/// An `update` suggestion that swaps the order's code for its non-contrast alternative.
pub fn non_contrast_update(input: &RuleInput) -> Option<(String, Vec<Action>)> {
    let alt = input.procedure.non_contrast_alternative.as_ref()?;
    let mut resource = input.order.raw.clone();
    resource["code"] =
        serde_json::json!({"coding": [{"system": alt.system, "code": alt.code, "display": alt.display}], "text": alt.display});
    let label = format!("Order {} instead", alt.display);
    let action = Action {
        kind: ActionType::Update,
        description: format!("Change the order to {}", alt.display),
        resource: Some(resource),
        resource_id: None,
    };
    Some((label, vec![action]))
}

pub fn date(t: OffsetDateTime) -> String {
    t.date().to_string()
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::imaging::procedure::Contrast;
    use serde_json::{Value, json};

    pub fn settings() -> RuleSettings {
        crate::configuration::Settings::default().rules
    }

    pub fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-11-29 12:00 UTC)
    }

    pub fn order(raw: Value) -> ServiceRequest {
        match radsight_fhir::parse_resource(&raw).unwrap() {
            radsight_fhir::Resource::ServiceRequest(sr) => sr,
            _ => unreachable!(),
        }
    }

    pub fn ct_chest_contrast() -> (ServiceRequest, ImagingProcedure) {
        let sr = order(json!({"resourceType": "ServiceRequest", "id": "draft-1", "status": "draft", "intent": "order",
            "subject": {"reference": "Patient/p1"}, "reasonCode": [{"text": "staging"}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "24628-0", "display": "CT Chest W contrast IV"}]}}));
        let procedure = ImagingProcedure {
            modality: Some("CT".into()),
            body_region: vec!["chest".into()],
            contrast: Contrast::Iodinated,
            non_contrast_alternative: Some(crate::imaging::procedure::CodeRef {
                system: "http://loinc.org".into(),
                code: "29252-4".into(),
                display: "CT Chest WO contrast".into(),
            }),
        };
        (sr, procedure)
    }

    pub fn data(resources: Vec<Value>) -> ClinicalData {
        let mut d = ClinicalData::default();
        for r in resources {
            match radsight_fhir::parse_resource(&r).unwrap() {
                radsight_fhir::Resource::ServiceRequest(x) => d.active_orders.push(x),
                radsight_fhir::Resource::ImagingStudy(x) => d.studies.push(x),
                radsight_fhir::Resource::AllergyIntolerance(x) => d.allergies.push(x),
                radsight_fhir::Resource::Observation(x) => d.observations.push(x),
                _ => {}
            }
        }
        d
    }

    /// Runs one rule on the contrast CT order.
    pub fn fire(rule: &Rule, data: &ClinicalData) -> Option<Card> {
        let (order, procedure) = ct_chest_contrast();
        let settings = settings();
        (rule.check)(&RuleInput { order: &order, procedure: &procedure, data, settings: &settings, now: now() }, rule)
    }
}
