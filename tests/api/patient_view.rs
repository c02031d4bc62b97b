//! patient-view: AI result cards for every recent study, whatever its modality.

use serde_json::json;

use crate::helpers::{Backend, example, spawn_app};

const VIEW: &str = "radsight-patient-view";

async fn patient_view_shows_results_and_pending_analyses_for_recent_studies(backend: Backend) {
    let app = spawn_app(backend).await;
    let negative = json!([{"code": "nodule", "display": "Pulmonary nodule", "probability": 0.08, "threshold": 0.5}]);
    app.seed_study("1.2.826.0.2.1", "DX", "chest", 3, Some(("done", negative))).await;
    app.seed_study("1.2.826.0.2.2", "MR", "brain", 1, Some(("running", json!([])))).await;
    app.seed_study("1.2.826.0.2.3", "US", "abdomen", 2, Some(("failed", json!([])))).await;
    let cards = app.hook(VIEW, &example("patient-view")).await.cards();
    assert_eq!(cards.len(), 3, "{cards:?}");
    let summaries: Vec<&str> = cards.iter().map(|c| c["summary"].as_str().unwrap()).collect();
    assert!(summaries.iter().any(|s| s.contains("no finding above threshold") && s.contains("DX chest")), "{summaries:?}");
    assert!(summaries.iter().any(|s| s.contains("MR brain") && s.contains("pending")), "{summaries:?}");
    assert!(summaries.iter().any(|s| s.contains("US abdomen") && s.contains("could not be completed")), "{summaries:?}");
    assert!(cards.iter().all(|c| c["indicator"] == "info"));
}

async fn patient_view_without_studies_returns_no_cards(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.hook(VIEW, &example("patient-view")).await.json(), json!({"cards": []}));
}

backend_tests!(patient_view_shows_results_and_pending_analyses_for_recent_studies, patient_view_without_studies_returns_no_cards);
