//! How faithful a result's saliency map is, read back from the stored row, and what radsight
//! says about it on cards, in the app and in the SR.
//!
//! Two figures are kept. The deletion AUC (columns `deletion_auc`, `random_deletion_auc`) is
//! radsight's first measure, whose details were chosen after results had been seen. ROAD
//! (remove and debias, Rong et al. 2022, computed as pytorch-grad-cam does: noisy linear
//! imputation, percentiles 10–90, `(LeRF − MoRF) / 2` on the calibrated probability) was fixed
//! in advance, so it is the one the wording follows. ROAD lives in the explanation JSON under
//! `road`; results stored before it was recorded have none and fall back to the deletion AUC.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::store::entities::analysis_result;

/// One map's ROAD as the vision crate reports it (the fields radsight reads back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoadScores {
    pub percentiles: Vec<f32>,
    pub morf_mean: f32,
    pub lerf_mean: f32,
    /// `(lerf_mean − morf_mean) / 2`; higher is more faithful.
    pub combined: f32,
}

/// ROAD of the result's map and of a seeded random map on the same image and label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoadOfResult {
    pub map: RoadScores,
    pub random: RoadScores,
    pub beats_random: bool,
}

/// What the text says about the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The map beats a random map under the measure fixed in advance (ROAD).
    Faithful,
    /// It does not: the highlighted region may not be what drove the score.
    NotBetterThanRandom,
    /// Only the deletion AUC was recorded (results from before ROAD was stored).
    DeletionOnly {
        better_than_random: bool,
    },
    NotMeasured,
}

/// A stored result's faithfulness figures.
#[derive(Debug, Clone, PartialEq)]
pub struct FaithfulnessOfResult {
    pub deletion_auc: Option<f64>,
    pub random_deletion_auc: Option<f64>,
    pub road: Option<RoadOfResult>,
}

impl FaithfulnessOfResult {
    pub fn of(r: &analysis_result::Model) -> FaithfulnessOfResult {
        Self::from_parts(r.deletion_auc, r.random_deletion_auc, r.explanation.as_deref())
    }

    /// From the row's columns and its explanation JSON (`road` in it, when recorded).
    pub fn from_parts(deletion_auc: Option<f64>, random_deletion_auc: Option<f64>, explanation: Option<&str>) -> FaithfulnessOfResult {
        let road = explanation
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .and_then(|mut e| serde_json::from_value::<RoadOfResult>(e.get_mut("road")?.take()).ok());
        FaithfulnessOfResult { deletion_auc, random_deletion_auc, road }
    }

    pub fn verdict(&self) -> Verdict {
        match (&self.road, self.deletion_auc, self.random_deletion_auc) {
            (Some(road), _, _) if road.beats_random => Verdict::Faithful,
            (Some(_), _, _) => Verdict::NotBetterThanRandom,
            (None, Some(auc), Some(random)) => Verdict::DeletionOnly { better_than_random: auc < random },
            _ => Verdict::NotMeasured,
        }
    }

    /// The card's sentence about the map (Markdown), led by ROAD when it was recorded.
    pub fn card_sentence(&self, method: &str) -> String {
        let deletion = match (self.deletion_auc, self.random_deletion_auc) {
            (Some(auc), Some(random)) => format!(" Deletion AUC {auc:.3} against {random:.3} for a random map (lower is better)."),
            _ => String::new(),
        };
        match (self.verdict(), &self.road) {
            (Verdict::Faithful, Some(road)) => format!(
                "Saliency: **{method}**. Faithfulness (ROAD, fixed in advance; higher is better): **{:+.3}** against **{:+.3}** for a random map: removing the highlighted pixels changes the model's score more than removing random ones.{deletion}",
                road.map.combined, road.random.combined
            ),
            (Verdict::NotBetterThanRandom, Some(road)) => format!(
                "Saliency: **{method}**. ⚠ Faithfulness (ROAD, fixed in advance; higher is better): **{:+.3}**, not better than **{:+.3}** for a random map. The highlighted region may not be what drove the finding: do not rely on the map's location.{deletion}",
                road.map.combined, road.random.combined
            ),
            (Verdict::DeletionOnly { better_than_random }, _) => format!(
                "Saliency: **{method}**; faithfulness (deletion AUC, lower is better) **{:.3}** against **{:.3}** for a random map{}.",
                self.deletion_auc.unwrap_or_default(),
                self.random_deletion_auc.unwrap_or_default(),
                if better_than_random { "" } else { " (not better than random: read the map with caution)" }
            ),
            _ => format!("Saliency: **{method}**; faithfulness not measured."),
        }
    }

    /// The figures as the results API and the SMART app read them.
    pub fn to_json(&self) -> Value {
        json!({
            "deletionAuc": self.deletion_auc,
            "randomDeletionAuc": self.random_deletion_auc,
            "road": self.road.as_ref().map(|r| json!({
                "metric": "ROAD combined (remove and debias; (LeRF − MoRF) / 2 on the calibrated probability; higher is more faithful)",
                "combined": r.map.combined,
                "randomCombined": r.random.combined,
                "morfMean": r.map.morf_mean,
                "lerfMean": r.map.lerf_mean,
                "percentiles": r.map.percentiles,
                "beatsRandom": r.beats_random,
            })),
            "verdict": match self.verdict() {
                Verdict::Faithful => "faithful",
                Verdict::NotBetterThanRandom => "not-better-than-random",
                Verdict::DeletionOnly { better_than_random: true } => "deletion-only-better-than-random",
                Verdict::DeletionOnly { better_than_random: false } => "deletion-only-not-better-than-random",
                Verdict::NotMeasured => "not-measured",
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(combined: f32) -> RoadScores {
        RoadScores { percentiles: vec![10.0, 50.0, 90.0], morf_mean: -combined, lerf_mean: combined, combined }
    }

    fn figures(road: Option<(f32, f32)>, deletion: Option<(f64, f64)>) -> FaithfulnessOfResult {
        FaithfulnessOfResult {
            deletion_auc: deletion.map(|d| d.0),
            random_deletion_auc: deletion.map(|d| d.1),
            road: road.map(|(m, r)| RoadOfResult { map: scores(m), random: scores(r), beats_random: m > r }),
        }
    }

    #[test]
    fn the_wording_follows_road_when_it_was_recorded_whatever_the_deletion_auc_says() {
        // Deletion says "better than random", ROAD says not: ROAD, fixed in advance, decides.
        let f = figures(Some((0.01, 0.05)), Some((0.2, 0.6)));
        assert_eq!(f.verdict(), Verdict::NotBetterThanRandom);
        let s = f.card_sentence("grad-cam");
        assert!(s.contains("⚠") && s.contains("+0.010") && s.contains("+0.050") && s.contains("do not rely"), "{s}");

        let f = figures(Some((0.12, 0.02)), Some((0.7, 0.6)));
        assert_eq!(f.verdict(), Verdict::Faithful);
        let s = f.card_sentence("grad-cam");
        assert!(s.contains("+0.120") && !s.contains("⚠") && s.contains("Deletion AUC 0.700"), "{s}");
    }

    #[test]
    fn results_without_road_keep_the_deletion_wording() {
        let f = figures(None, Some((0.7, 0.6)));
        assert_eq!(f.verdict(), Verdict::DeletionOnly { better_than_random: false });
        assert!(f.card_sentence("occlusion").contains("not better than random"));
        assert_eq!(figures(None, None).card_sentence("grad-cam"), "Saliency: **grad-cam**; faithfulness not measured.");
        assert_eq!(figures(None, None).to_json()["verdict"], "not-measured");
    }

    #[test]
    fn road_is_read_back_from_the_explanation_and_a_missing_or_broken_one_is_none() {
        let road = json!({"percentiles": [10.0, 20.0], "morf": [-0.1, -0.2], "lerf": [0.0, -0.01], "morf_mean": -0.15,
                          "lerf_mean": -0.005, "combined": 0.0725, "noise": 0.01, "seed": 0});
        let explanation = json!({"method": "grad-cam", "road": {"map": road, "random": road, "beats_random": false}}).to_string();
        let f = FaithfulnessOfResult::from_parts(Some(0.3), Some(0.4), Some(&explanation));
        let road = f.road.expect("road read back");
        assert_eq!(road.map.combined, 0.0725);
        assert!(!road.beats_random);
        assert_eq!(FaithfulnessOfResult::from_parts(None, None, Some(r#"{"road": {"map": 1}}"#)).road, None);
        assert_eq!(FaithfulnessOfResult::from_parts(None, None, Some("not json")).road, None);
    }
}
