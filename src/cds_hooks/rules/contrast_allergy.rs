//! Iodinated or gadolinium contrast ordered for a patient with a documented, active contrast
//! allergy. Allergies are matched by configured codes and by agent names, and by agent family:
//! an iodinated-contrast allergy does not fire on a gadolinium order, a generic one fires on both.

use radsight_fhir::AllergyIntolerance;

use super::{Rule, RuleInput, non_contrast_update};
use crate::cds_hooks::cards::{Card, Indicator, standard_override_reasons};
use crate::imaging::procedure::{Contrast, matches_token};

pub const RULE: Rule =
    Rule { id: "contrast-allergy", version: "1.0.0", title: "Contrast allergy", needs: &[("allergies", "allergy list")], applies, check };

/// Only orders that give contrast.
fn applies(input: &RuleInput) -> bool {
    input.procedure.contrast.is_given()
}

const IODINATED: &[&str] =
    &["iodin", "iohexol", "iopamidol", "iodixanol", "ioversol", "iopromide", "iomeprol", "ioxaglate", "ioxilan", "diatrizoate"];
const GADOLINIUM: &[&str] =
    &["gadolin", "gadobutrol", "gadoterate", "gadopentetate", "gadobenate", "gadoteridol", "gadoxetate", "gadodiamide", "gadopiclenol"];

/// Which contrast family an allergy concerns, if any.
fn allergy_family(allergy: &AllergyIntolerance, codes: &[String]) -> Option<Contrast> {
    let concepts = allergy.code.iter().chain(&allergy.reaction_substances);
    let labels: Vec<String> = concepts.clone().flat_map(|c| c.labels()).map(str::to_lowercase).collect();
    let named = |words: &[&str]| labels.iter().any(|l| words.iter().any(|w| l.contains(w)));
    if named(IODINATED) {
        return Some(Contrast::Iodinated);
    }
    if named(GADOLINIUM) {
        return Some(Contrast::Gadolinium);
    }
    let coded = concepts.flat_map(|c| &c.codings).any(|c| codes.iter().any(|t| matches_token(c, t)));
    (coded || labels.iter().any(|l| l.contains("contrast"))).then_some(Contrast::Unspecified)
}

fn is_current(a: &AllergyIntolerance) -> bool {
    !matches!(a.clinical_status.as_deref(), Some("inactive" | "resolved"))
        && !matches!(a.verification_status.as_deref(), Some("refuted" | "entered-in-error"))
}

fn check(input: &RuleInput, rule: &Rule) -> Option<Card> {
    let ordered = input.procedure.contrast;
    if !applies(input) {
        return None;
    }
    let allergy = input.data.allergies.iter().filter(|a| is_current(a)).find(|a| {
        match allergy_family(a, &input.settings.contrast_allergy_codes) {
            None => false,
            Some(Contrast::Unspecified) => true,
            Some(family) => ordered == Contrast::Unspecified || family == ordered,
        }
    })?;
    let name = allergy.code.as_ref().and_then(|c| c.labels().next()).unwrap_or("contrast media");
    let label = input.order_label();
    let mut card = rule
        .card(&format!("{label}: documented allergy to {name}"), Indicator::Warning)
        .detail(format!(
            "The patient has an active allergy record for **{name}** and this order includes {} contrast.\n\nConsider a non-contrast examination, or premedication per local protocol.",
            match ordered { Contrast::Gadolinium => "gadolinium-based", Contrast::Iodinated => "iodinated", _ => "intravenous" }
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

    fn allergy(text: &str, status: &str) -> serde_json::Value {
        json!({"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p1"},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": status}]},
            "code": {"text": text}})
    }

    #[test]
    fn an_active_iodinated_contrast_allergy_fires_and_offers_the_non_contrast_ct() {
        let card = fire(&RULE, &data(vec![allergy("Iohexol", "active")])).expect("fires");
        assert!(card.summary.contains("Iohexol"));
        let resource = card.suggestions[0].actions[0].resource.as_ref().unwrap();
        assert_eq!(resource["code"]["coding"][0]["code"], "29252-4");
        assert_eq!(resource["id"], "draft-1");
    }

    #[test]
    fn coded_generic_contrast_allergies_fire() {
        let coded = json!({"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "293637006"}]}});
        assert!(fire(&RULE, &data(vec![coded])).is_some());
    }

    #[test]
    fn resolved_gadolinium_and_unrelated_allergies_do_not_fire_on_iodinated_contrast() {
        assert!(fire(&RULE, &data(vec![allergy("Iodinated contrast media", "resolved")])).is_none());
        assert!(fire(&RULE, &data(vec![allergy("Gadobutrol", "active")])).is_none());
        assert!(fire(&RULE, &data(vec![allergy("Penicillin", "active")])).is_none());
    }
}
