//! The same procedure already ordered (an active ServiceRequest) or done (an ImagingStudy)
//! within `rules.duplicate_window_days`.

use super::{Rule, RuleInput, date};
use crate::cds_hooks::cards::{Action, ActionType, Card, Indicator, standard_override_reasons};

pub const RULE: Rule = Rule {
    id: "duplicate-order",
    version: "1.0.0",
    title: "Duplicate imaging order",
    needs: &[("activeImagingOrders", "active imaging orders"), ("imagingStudies", "imaging studies")],
    applies: |_| true,
    check,
};

fn check(input: &RuleInput, rule: &Rule) -> Option<Card> {
    let code = input.order.code.as_ref()?;
    let window = input.settings.duplicate_window_days;
    let mut matches = Vec::new();
    for other in &input.data.active_orders {
        let same_order = other.id.is_some() && other.id == input.order.id;
        let active = matches!(other.status.as_str(), "active" | "on-hold");
        let recent = other.authored_on.is_none() || input.within_days(other.authored_on, window);
        if !same_order && active && recent && other.code.as_ref().is_some_and(|c| c.shares_code_with(code)) {
            matches.push(match other.authored_on {
                Some(t) => format!("an active order placed on {}", date(t)),
                None => "an active order".to_owned(),
            });
        }
    }
    for study in &input.data.studies {
        let done = !matches!(study.status.as_str(), "cancelled" | "entered-in-error");
        if done && input.within_days(study.started, window) && study.procedure_codes.iter().any(|c| c.shares_code_with(code)) {
            matches.push(format!("a study performed on {}", study.started.map(date).unwrap_or_default()));
        }
    }
    if matches.is_empty() {
        return None;
    }
    let label = input.order_label();
    let mut card = rule
        .card(&format!("Possible duplicate: {label} matches {}", matches[0]), Indicator::Warning)
        .detail(format!(
            "The same procedure code appears within the last {window} days:\n\n{}\n\nRepeat imaging adds radiation dose and cost; confirm that a new examination is needed.",
            matches.iter().map(|m| format!("- {m}")).collect::<Vec<_>>().join("\n")
        ))
        .override_reasons(standard_override_reasons());
    if let Some(id) = &input.order.id {
        card = card.suggest(
            "Remove this duplicate order",
            true,
            vec![Action {
                kind: ActionType::Delete,
                description: format!("Remove the draft order for {label}"),
                resource: None,
                resource_id: Some(format!("ServiceRequest/{id}")),
            }],
        );
    }
    Some(card)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use serde_json::json;

    fn active(id: &str, code: &str, authored: &str) -> serde_json::Value {
        json!({"resourceType": "ServiceRequest", "id": id, "status": "active", "intent": "order", "subject": {"reference": "Patient/p1"},
            "authoredOn": authored, "code": {"coding": [{"system": "http://loinc.org", "code": code}]}})
    }

    #[test]
    fn an_active_order_for_the_same_code_within_the_window_fires_with_a_delete() {
        let card = fire(&RULE, &data(vec![active("old", "24628-0", "2026-11-20")])).expect("fires");
        assert!(card.summary.contains("2026-11-20"), "{}", card.summary);
        assert_eq!(card.suggestions[0].actions[0].resource_id.as_deref(), Some("ServiceRequest/draft-1"));
    }

    #[test]
    fn old_orders_other_codes_and_the_draft_itself_do_not_fire() {
        assert!(fire(&RULE, &data(vec![active("old", "24628-0", "2026-09-01")])).is_none());
        assert!(fire(&RULE, &data(vec![active("old", "36643-5", "2026-11-20")])).is_none());
        assert!(fire(&RULE, &data(vec![active("draft-1", "24628-0", "2026-11-28")])).is_none());
    }

    #[test]
    fn a_recent_study_with_the_same_procedure_code_fires() {
        let study = json!({"resourceType": "ImagingStudy", "status": "available", "subject": {"reference": "Patient/p1"},
            "started": "2026-11-25T08:00:00Z", "procedureCode": [{"coding": [{"system": "http://loinc.org", "code": "24628-0"}]}]});
        assert!(fire(&RULE, &data(vec![study])).unwrap().summary.contains("study performed on 2026-11-25"));
    }
}
