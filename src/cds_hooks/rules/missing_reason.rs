//! An imaging order without `reasonCode` or `reasonReference`: appropriate-use criteria and
//! the radiologist both need the clinical indication.

use super::{Rule, RuleInput};
use crate::cds_hooks::cards::{Card, Coding, Indicator, OVERRIDE_REASON_SYSTEM};

/// Reads only the order itself.
pub const RULE: Rule =
    Rule { id: "missing-reason", version: "1.0.0", title: "Missing clinical indication", needs: &[], applies: |_| true, check };

fn check(input: &RuleInput, rule: &Rule) -> Option<Card> {
    if input.order.reason_code_count + input.order.reason_reference_count > 0 {
        return None;
    }
    Some(
        rule.card(&format!("{}: no clinical indication given", input.order_label()), Indicator::Info)
            .detail(
                "Add a reason (reasonCode or a linked Condition). Imaging appropriateness checks and the reporting radiologist rely on the clinical question."
                    .to_owned(),
            )
            .override_reasons(vec![Coding::new(OVERRIDE_REASON_SYSTEM, "indication-elsewhere", "The indication is documented elsewhere in the order")]),
    )
}

#[cfg(test)]
mod tests {
    use super::super::RuleInput;
    use super::super::test_support::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn fires_only_when_neither_reason_element_is_present() {
        assert!(fire(&RULE, &data(vec![])).is_none(), "the test order has a reasonCode");
        let (_, procedure) = ct_chest_contrast();
        let bare =
            order(json!({"resourceType": "ServiceRequest", "status": "draft", "intent": "order", "subject": {"reference": "Patient/p1"}}));
        let s = settings();
        let d = data(vec![]);
        let input = RuleInput { order: &bare, procedure: &procedure, data: &d, settings: &s, now: now() };
        assert_eq!(check(&input, &RULE).unwrap().indicator, Indicator::Info);
    }
}
