//! Intravenous contrast ordered while the most recent eGFR (within
//! `rules.egfr_max_age_days`) is below `rules.egfr_threshold` (30 mL/min/1.73m² by default):
//! the risk threshold for contrast-associated kidney injury and for group I gadolinium agents.

use radsight_fhir::{Observation, ObservationValue};

use super::{Rule, RuleInput, date, non_contrast_update};
use crate::cds_hooks::cards::{Card, Indicator, standard_override_reasons};

pub const RULE: Rule = Rule {
    id: "renal-function",
    version: "1.0.0",
    title: "Low eGFR with contrast",
    needs: &[("renalFunction", "eGFR result")],
    applies,
    check,
};

/// Only orders that give contrast.
fn applies(input: &RuleInput) -> bool {
    input.procedure.contrast.is_given()
}
const LOINC: &str = "http://loinc.org";

fn is_egfr(o: &Observation, codes: &[String]) -> bool {
    codes.iter().any(|code| o.code.has(LOINC, code)) && matches!(o.status.as_str(), "final" | "amended" | "corrected" | "preliminary")
}

fn check(input: &RuleInput, rule: &Rule) -> Option<Card> {
    if !applies(input) {
        return None;
    }
    let latest = input
        .data
        .observations
        .iter()
        .filter(|o| is_egfr(o, &input.settings.egfr_loinc_codes) && input.within_days(o.when(), input.settings.egfr_max_age_days))
        .max_by_key(|o| o.when())?;
    let Some(ObservationValue::Quantity { value: Some(value), comparator, .. }) = &latest.value else {
        return None;
    };
    let threshold = input.settings.egfr_threshold;
    let below = *value < threshold || (comparator.as_deref() == Some("<") && *value <= threshold);
    if !below {
        return None;
    }
    let when = latest.when().map(date).unwrap_or_default();
    let shown = format!("{}{value}", comparator.as_deref().unwrap_or(""));
    let mut card = rule
        .card(&format!("{}: eGFR {shown} mL/min/1.73m² on {when}, below {threshold}", input.order_label()), Indicator::Warning)
        .detail(format!(
            "The most recent eGFR ({shown} mL/min/1.73m², {when}) is below {threshold}. Intravenous contrast carries a risk of kidney injury at this level.\n\nConsider a non-contrast examination, or follow the local contrast and renal-function protocol."
        ))
        .override_reasons(standard_override_reasons());
    if let Some((label, actions)) = non_contrast_update(input) {
        card = card.suggest(&label, true, actions);
    }
    Some(card)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use serde_json::json;

    fn egfr(value: f64, when: &str) -> serde_json::Value {
        json!({"resourceType": "Observation", "status": "final", "effectiveDateTime": when,
            "code": {"coding": [{"system": "http://loinc.org", "code": "62238-1"}]},
            "valueQuantity": {"value": value, "unit": "mL/min/{1.73_m2}"}})
    }

    #[test]
    fn a_recent_low_egfr_fires() {
        let card = fire(&RULE, &data(vec![egfr(24.0, "2026-11-20T08:00:00Z")])).expect("fires");
        assert!(card.summary.contains("eGFR 24"), "{}", card.summary);
    }

    #[test]
    fn only_the_latest_recent_value_counts() {
        // An old low value superseded by a normal one does not fire; a stale low value alone neither.
        assert!(fire(&RULE, &data(vec![egfr(20.0, "2026-11-01T08:00:00Z"), egfr(65.0, "2026-11-25T08:00:00Z")])).is_none());
        assert!(fire(&RULE, &data(vec![egfr(20.0, "2026-05-01T08:00:00Z")])).is_none());
        assert!(fire(&RULE, &data(vec![egfr(30.0, "2026-11-25T08:00:00Z")])).is_none());
    }
}
