use crate::helpers::*;
use radsight_vision::{Error, Registry};

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn the_committed_registry_lists_and_verifies_the_phantom_model() {
    let reg = registry();
    let ids: Vec<_> = reg.models().iter().map(|e| e.card.id.as_str()).collect();
    assert_eq!(ids, [MODEL_ID]);
    let card = &reg.models()[0].card;
    assert!(card.intended_use.not_for_clinical_use);
    assert!(card.summary.contains("NOT FOR CLINICAL USE"));
    assert_eq!(card.calibration.method, "platt");
    for (id, result) in reg.verify_all() {
        result.unwrap_or_else(|e| panic!("{id}: {e}"));
    }
}

#[test]
fn a_tampered_weight_file_is_refused_with_the_hash_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(MODEL_ID);
    copy_dir(&models_dir().join(MODEL_ID), &dir);
    let path = dir.join("weights.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let i = bytes.len() - 100; // inside the tensor data: still a valid safetensors file
    bytes[i] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    let reg = Registry::open(tmp.path()).unwrap();
    match reg.load(MODEL_ID) {
        Err(Error::WeightsHashMismatch { model, expected, actual }) => {
            assert_eq!(model, MODEL_ID);
            assert_eq!(expected, reg.get(MODEL_ID).unwrap().card.weights.sha256);
            assert_ne!(expected, actual);
        }
        other => panic!("expected WeightsHashMismatch, got {other:?}"),
    }
    assert!(matches!(reg.verify_all()[0].1, Err(Error::WeightsHashMismatch { .. })));
    assert!(reg.load(MODEL_ID).unwrap_err().to_string().contains("refusing to load"));
}

#[test]
fn a_weights_sha256_file_that_disagrees_with_the_card_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(MODEL_ID);
    copy_dir(&models_dir().join(MODEL_ID), &dir);
    std::fs::write(dir.join("weights.sha256"), format!("{}  weights.safetensors\n", "0".repeat(64))).unwrap();
    let reg = Registry::open(tmp.path()).unwrap();
    assert!(matches!(reg.load(MODEL_ID), Err(Error::WeightsHashMismatch { .. })));
}

#[test]
fn routing_matches_modality_and_body_part_case_insensitively() {
    let reg = registry();
    let check = |m: Option<&str>, b: Option<&str>, expected: usize| {
        assert_eq!(reg.route(m, b, None).len(), expected, "route({m:?}, {b:?})");
    };
    check(Some("DX"), Some("CHEST"), 1);
    check(Some("cr"), Some("chest"), 1);
    check(Some("CT"), Some("CHEST"), 0);
    check(Some("DX"), Some("KNEE"), 0);
    check(None, Some("CHEST"), 0);
    assert_eq!(reg.route(Some("DX"), Some("CHEST"), Some("any-code")).len(), 1, "an empty code list matches any code");
}

#[test]
fn an_unknown_model_and_an_invalid_card_are_reported() {
    assert!(matches!(registry().load("nope"), Err(Error::ModelNotFound { .. })));
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("bad")).unwrap();
    std::fs::write(tmp.path().join("bad/model-card.toml"), "id = \"Bad Id\"\n").unwrap();
    assert!(matches!(Registry::open(tmp.path()), Err(Error::ParseCard { .. })));
}

#[test]
fn the_card_survives_a_toml_round_trip() {
    let card = registry().get(MODEL_ID).unwrap().card.clone();
    let text = card.to_toml().unwrap();
    assert_eq!(radsight_vision::ModelCard::parse(&text).unwrap(), card);
}
