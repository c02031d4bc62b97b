//! Cards from stored AI results on the patient's relevant prior studies.
//!
//! **Invariant:** hooks never run a model. Models run when a study arrives (ingestion); a hook
//! only reads `studies` and `analysis_results`, and says "pending" when no result is ready.
//!
//! Relevant means: within `hooks.lookback_days`, and for order hooks the same modality family
//! or an overlapping body region as one of the orders; for patient-view, every recent study.

use sea_orm::{DatabaseConnection, DbErr};
use time::OffsetDateTime;

use super::cards::{Card, Coding, Indicator, IssuedCard, Link, LinkType, MODEL_TOPIC_SYSTEM, Origin, Source};
use crate::domain::{PatientId, PatientNamespace};
use crate::imaging::procedure::{ImagingProcedure, modality_family, region_words, regions_overlap};
use crate::results::faithfulness::FaithfulnessOfResult;
use crate::results::store::{are_regions, studies_with_latest_results};
use crate::store::ResultStatus;
use crate::store::entities::{analysis_result, study};

pub use crate::results::Finding;

pub struct ResultCardSettings<'a> {
    pub lookback_days: i64,
    pub public_url: &'a str,
    pub smart_launch_url: &'a str,
    /// Signs the saliency link: the clinician's browser opening it carries no client JWT.
    pub links: &'a crate::results::LinkSigner,
    pub now: i64,
}

fn is_relevant(s: &study::Model, orders: &[ImagingProcedure]) -> bool {
    let regions = s.body_site.as_deref().map(region_words).unwrap_or_default();
    orders.iter().any(|p| {
        let same_family = p.modality.as_deref().is_some_and(|m| modality_family(m) == modality_family(&s.modality));
        same_family || regions_overlap(&p.body_region, &regions)
    })
}

fn study_label(s: &study::Model) -> String {
    let mut label = s.modality.clone();
    if let Some(site) = &s.body_site {
        label.push(' ');
        label.push_str(&site.to_lowercase());
    }
    if let Some(at) = s.started_at.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok()) {
        label.push_str(&format!(" of {}", at.date()));
    }
    label
}

/// Builds the result cards. `orders` is `None` for patient-view (every recent study counts).
pub async fn result_cards(
    db: &DatabaseConnection,
    namespace: &PatientNamespace,
    patient: &PatientId,
    orders: Option<&[ImagingProcedure]>,
    settings: &ResultCardSettings<'_>,
    now: OffsetDateTime,
) -> Result<Vec<IssuedCard>, DbErr> {
    let since = (now - time::Duration::days(settings.lookback_days)).unix_timestamp();
    let studies = studies_with_latest_results(db, namespace, &patient.reference()).await?;
    Ok(studies
        .iter()
        .filter(|(s, _)| s.started_at.unwrap_or(s.created_at) >= since)
        .filter(|(s, _)| orders.is_none_or(|o| is_relevant(s, o)))
        .flat_map(|(s, latest)| match latest.as_slice() {
            [] => vec![card_for(s, None, settings)],
            // One card per model that ran; a study no model is meant for gets no card: nothing
            // to say, nothing pending.
            rows => {
                rows.iter().filter(|r| r.result_status() != ResultStatus::NotApplicable).map(|r| card_for(s, Some(r), settings)).collect()
            }
        })
        .collect())
}

fn card_for(s: &study::Model, result: Option<&analysis_result::Model>, settings: &ResultCardSettings) -> IssuedCard {
    let label = study_label(s);
    let status_source = || Source { label: "radsight imaging AI".into(), url: None, topic: None };
    match result.map(|r| (r, r.result_status())) {
        Some((r, ResultStatus::Done)) => model_card(s, r, &label, settings),
        Some((r, ResultStatus::Failed)) => IssuedCard {
            card: Card::new(
                &match &r.model_id {
                    Some(model) => format!("AI analysis of the {label} study by {model} could not be completed"),
                    None => format!("AI analysis of the {label} study could not be completed"),
                },
                Indicator::Info,
                status_source(),
            )
                .detail("No AI result is available for this study. The images are unaffected; review them as usual.".into()),
            origin: Origin { kind: "status", id: "analysis-failed".into(), version: "1".into() },
        },
        _ => IssuedCard {
            card: Card::new(&format!("AI analysis of the {label} study is pending"), Indicator::Info, status_source())
                .detail("radsight has received this study and its analysis is not finished yet. Results will appear on the next visit to the chart or order.".into()),
            origin: Origin { kind: "status", id: "analysis-pending".into(), version: "1".into() },
        },
    }
}

/// Past this many labels (TorchXRayVision's models have 18) a card shows the top findings only.
const CARD_ROWS: usize = 6;

/// The findings a card lists, and how many it leaves to the app: every label when there are
/// few; else every finding above its threshold and then the most probable others, up to
/// [`CARD_ROWS`] rows (more only when more are above threshold), in decreasing probability.
fn card_rows(findings: &[Finding]) -> (Vec<&Finding>, usize) {
    if findings.len() <= CARD_ROWS {
        return (findings.iter().collect(), 0);
    }
    let mut ranked: Vec<&Finding> = findings.iter().collect();
    ranked.sort_by(|a, b| b.is_positive().cmp(&a.is_positive()).then(b.probability.total_cmp(&a.probability)));
    let take = ranked.iter().filter(|f| f.is_positive()).count().max(CARD_ROWS);
    let hidden = ranked.len() - take;
    ranked.truncate(take);
    (ranked, hidden)
}

fn model_card(s: &study::Model, r: &analysis_result::Model, label: &str, settings: &ResultCardSettings) -> IssuedCard {
    let findings: Vec<Finding> = serde_json::from_str(&r.findings).unwrap_or_default();
    let model_id = r.model_id.clone().unwrap_or_else(|| "unknown-model".into());
    let version = r.model_version.clone().unwrap_or_else(|| "unknown".into());
    let segmentation = are_regions(&findings);
    let (summary, indicator, table) =
        if segmentation { segmentation_summary(&findings, label) } else { classification_summary(&findings, label) };
    let weights = r.weights_sha256.as_deref().map(|h| &h[..h.len().min(12)]).unwrap_or("unknown");
    let card_json: serde_json::Value = r.model_card.as_deref().and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
    let intended_use = card_json["intended_use"].as_str().unwrap_or("see the model card");
    let explanation = match r.saliency_method.as_deref() {
        Some(_) if segmentation => {
            "Explanation: the outlined region is the model's own mask; the saliency map is Grad-CAM of the mask score (what drove the outline).".into()
        }
        Some(method) => FaithfulnessOfResult::of(r).card_sentence(method),
        None => "No saliency map.".into(),
    };
    let detail = format!(
        "{table}\n\nModel **{model_id} {version}** (weights {weights}…). Intended use: {intended_use}\n\n{explanation}\n\nAI findings support and do not replace the clinician's judgement."
    );
    let mut topic = Coding::new(MODEL_TOPIC_SYSTEM, &model_id, &model_id);
    topic.version = Some(version.clone());
    let app_context = serde_json::json!({"studyInstanceUid": s.study_uid, "resultId": r.id}).to_string();
    let card = Card::new(&summary, indicator, Source { label: "radsight imaging AI".into(), url: None, topic: Some(topic) })
        .detail(detail)
        .link(Link {
            label: "Review findings and saliency in radsight".into(),
            url: settings.smart_launch_url.to_owned(),
            kind: LinkType::Smart,
            app_context: Some(app_context),
        })
        .link(Link {
            label: "Saliency map".into(),
            url: settings.links.sign(settings.public_url, &format!("/results/{}/saliency.png", r.id), settings.now),
            kind: LinkType::Absolute,
            app_context: None,
        });
    IssuedCard { card, origin: Origin { kind: "model", id: model_id, version } }
}

/// A classifier's summary: the finding furthest above its threshold, and the top findings.
fn classification_summary(findings: &[Finding], label: &str) -> (String, Indicator, String) {
    let top = findings
        .iter()
        .filter(|f| f.probability >= f.threshold)
        .max_by(|a, b| (a.probability - a.threshold).total_cmp(&(b.probability - b.threshold)));
    let (summary, indicator) = match top {
        Some(f) => {
            (format!("AI: {} suspected on {label} (p={:.2}, threshold {:.2})", f.display, f.probability, f.threshold), Indicator::Warning)
        }
        None => (format!("AI: no finding above threshold on {label}"), Indicator::Info),
    };
    let (shown, hidden) = card_rows(findings);
    let mut rows: Vec<String> = shown
        .iter()
        .map(|f| {
            format!(
                "| {} | {:.2} | {:.2} | {} |",
                f.display,
                f.probability,
                f.threshold,
                if f.probability >= f.threshold { "above" } else { "below" }
            )
        })
        .collect();
    if hidden > 0 {
        rows.push(format!("| {hidden} more, all below their thresholds | | | see the app |"));
    }
    let table = format!("| Finding | Probability | Threshold | |\n|---|---|---|---|\n{}", rows.join("\n"));
    (summary, indicator, table)
}

/// A segmentation's summary: the largest region found, and one row per label with its area.
fn segmentation_summary(findings: &[Finding], label: &str) -> (String, Indicator, String) {
    let largest = findings.iter().filter(|f| f.is_positive()).max_by_key(|f| f.area.as_ref().map(|a| a.model_pixels).unwrap_or(0));
    let area = |f: &Finding| f.area.as_ref().map(|a| a.describe()).unwrap_or_else(|| "—".into());
    let (summary, indicator) = match largest {
        Some(f) => (format!("AI: {} outlined on {label} ({})", f.display, area(f)), Indicator::Warning),
        None => (format!("AI: no region outlined on {label}"), Indicator::Info),
    };
    let rows: Vec<String> = findings
        .iter()
        .map(|f| format!("| {} | {} | {} |", f.display, area(f), if f.is_positive() { "outlined" } else { "none" }))
        .collect();
    (summary, indicator, format!("| Region | Area | |\n|---|---|---|\n{}", rows.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(code: &str, probability: f64, threshold: f64) -> Finding {
        Finding { code: code.into(), display: code.into(), probability, threshold, standard: None, area: None }
    }

    #[test]
    fn a_card_lists_every_label_of_a_small_model_and_the_top_findings_of_a_large_one() {
        let few: Vec<Finding> = (0..3).map(|i| finding(&format!("l{i}"), 0.1 * i as f64, 0.5)).collect();
        let (shown, hidden) = card_rows(&few);
        assert_eq!((shown.iter().map(|f| f.code.as_str()).collect::<Vec<_>>(), hidden), (vec!["l0", "l1", "l2"], 0), "card order kept");

        // 18 labels; one above its (high) threshold though less probable than others.
        let mut many: Vec<Finding> = (0..18).map(|i| finding(&format!("l{i}"), 0.02 * i as f64, 0.9)).collect();
        many[3] = finding("positive", 0.30, 0.25);
        let (shown, hidden) = card_rows(&many);
        let codes: Vec<&str> = shown.iter().map(|f| f.code.as_str()).collect();
        assert_eq!(codes, vec!["positive", "l17", "l16", "l15", "l14", "l13"]);
        assert_eq!(hidden, 12);

        // More positives than rows: every positive is shown.
        let all: Vec<Finding> = (0..10).map(|i| finding(&format!("p{i}"), 0.6, 0.5)).collect();
        assert_eq!(card_rows(&all).0.len(), 10);
    }
}
