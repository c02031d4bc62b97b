//! An examination with ionising radiation ordered while the most recent pregnancy status
//! (LOINC 82810-3) or hCG test (2106-3 urine, 2118-8 serum) within
//! `rules.pregnancy_max_age_days` is positive.

use radsight_fhir::{Observation, ObservationValue};

use super::{Rule, RuleInput, date};
use crate::cds_hooks::cards::{Card, Indicator, standard_override_reasons};

pub const RULE: Rule = Rule {
    id: "pregnancy-radiation",
    version: "1.0.0",
    title: "Ionising radiation in pregnancy",
    needs: &[("pregnancyStatus", "pregnancy status")],
    applies,
    check,
};

/// Only examinations with ionising radiation.
fn applies(input: &RuleInput) -> bool {
    input.procedure.is_ionising()
}

const LOINC: &str = "http://loinc.org";
const SNOMED: &str = "http://snomed.info/sct";
const PREGNANCY_CODES: &[&str] = &["82810-3", "2106-3", "2118-8"];

/// `Some(true)` positive, `Some(false)` negative, `None` when the result cannot be read.
fn is_positive(o: &Observation) -> Option<bool> {
    let interpretation = o.interpretation.iter().flat_map(|c| &c.codings).find_map(|c| match c.code.as_deref() {
        Some("POS") => Some(true),
        Some("NEG") => Some(false),
        _ => None,
    });
    let from_value = match &o.value {
        // SNOMED 77386006 |Pregnant|, 10828004 |Positive|; 60001007 |Not pregnant|, 260385009 |Negative|.
        Some(ObservationValue::Concept(c)) if c.has(SNOMED, "77386006") || c.has(SNOMED, "10828004") => Some(true),
        Some(ObservationValue::Concept(c)) if c.has(SNOMED, "60001007") || c.has(SNOMED, "260385009") => Some(false),
        Some(ObservationValue::Concept(c)) => c.labels().find_map(read_text),
        Some(ObservationValue::Text(s)) => read_text(s),
        Some(ObservationValue::Boolean(b)) => Some(*b),
        _ => None,
    };
    from_value.or(interpretation)
}

fn read_text(s: &str) -> Option<bool> {
    let s = s.to_lowercase();
    if s.contains("not pregnant") || s.contains("negative") {
        Some(false)
    } else if s.contains("pregnant") || s.contains("positive") {
        Some(true)
    } else {
        None
    }
}

fn check(input: &RuleInput, rule: &Rule) -> Option<Card> {
    if !applies(input) {
        return None;
    }
    let latest = input
        .data
        .observations
        .iter()
        .filter(|o| PREGNANCY_CODES.iter().any(|code| o.code.has(LOINC, code)))
        .filter(|o| !matches!(o.status.as_str(), "cancelled" | "entered-in-error"))
        .filter(|o| input.within_days(o.when(), input.settings.pregnancy_max_age_days))
        .max_by_key(|o| o.when())?;
    if is_positive(latest) != Some(true) {
        return None;
    }
    let when = latest.when().map(date).unwrap_or_default();
    Some(
        rule.card(&format!("{}: uses ionising radiation and the patient is recorded as pregnant ({when})", input.order_label()), Indicator::Warning)
            .detail(format!(
                "The most recent pregnancy result ({when}) is positive. Confirm that the examination is justified, consider ultrasound or MRI, and follow the local protocol for imaging in pregnancy."
            ))
            .override_reasons(standard_override_reasons()),
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use serde_json::json;

    fn status(code: &str, value_code: &str, when: &str) -> serde_json::Value {
        json!({"resourceType": "Observation", "status": "final", "effectiveDateTime": when,
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": value_code}]}})
    }

    #[test]
    fn a_recent_positive_pregnancy_status_fires_on_ct() {
        assert!(fire(&RULE, &data(vec![status("82810-3", "77386006", "2026-11-28T08:00:00Z")])).is_some());
        assert!(fire(&RULE, &data(vec![status("2106-3", "10828004", "2026-11-28T08:00:00Z")])).is_some());
    }

    #[test]
    fn a_newer_negative_result_or_an_old_positive_does_not_fire() {
        let older_pos = status("82810-3", "77386006", "2026-11-20T08:00:00Z");
        let newer_neg = status("2106-3", "260385009", "2026-11-28T08:00:00Z");
        assert!(fire(&RULE, &data(vec![older_pos, newer_neg])).is_none());
        assert!(fire(&RULE, &data(vec![status("82810-3", "77386006", "2026-08-01T08:00:00Z")])).is_none());
    }
}
