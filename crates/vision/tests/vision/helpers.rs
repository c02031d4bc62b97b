use radsight_vision::candle_core::{Device, Tensor};
use radsight_vision::candle_nn::VarBuilder;
use radsight_vision::nn::compact::CompactCnn;
use radsight_vision::{Model, ModelCard, Registry};
use std::collections::HashMap;
use std::path::PathBuf;

pub const MODEL_ID: &str = "radsight-phantom-cxr";
/// Held-out phantom seed for these tests (training uses 20261201..=20261203).
pub const TEST_SEED: u64 = 777_001;

pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

pub fn registry() -> Registry {
    Registry::open(models_dir()).expect("open the committed registry")
}

pub fn model() -> Model {
    registry().load(MODEL_ID).expect("load the committed model")
}

/// The committed model's card and tensors by name.
pub fn committed_tensors() -> (ModelCard, HashMap<String, Tensor>) {
    let reg = registry();
    let entry = reg.get(MODEL_ID).unwrap();
    let bytes = std::fs::read(entry.weights_path()).unwrap();
    let tensors = radsight_vision::candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
    (entry.card.clone(), tensors)
}

pub fn compact_from(card: &ModelCard, tensors: HashMap<String, Tensor>) -> CompactCnn {
    let radsight_vision::card::Architecture::CompactCnn(cfg) = &card.architecture else { panic!("compact model expected") };
    let vb = VarBuilder::from_tensors(tensors, radsight_vision::candle_core::DType::F32, &Device::Cpu);
    CompactCnn::new(cfg, vb).unwrap()
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
