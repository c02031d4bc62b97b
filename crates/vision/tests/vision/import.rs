//! Import refusals and conversions without PyTorch: weights are written here under the names
//! and shapes the architecture asks for ([`expected_tensors`]), then broken one way at a time.

use radsight_vision::candle_core::{DType, Device, Tensor};
use radsight_vision::import::{ImportError, architecture_of, expected_tensors, import_model};
use radsight_vision::{LoadedModel, Registry};
use std::collections::HashMap;
use std::path::Path;

const DESCRIPTION: &str = r#"
id = "tiny-unet"
version = "1.0.0"
name = "tiny U-Net"
architecture = "basic_unet"
unet_features = [4, 4, 8, 8, 16, 4]
[input]
size = 32
channels = 1
intensity_range = [-1024.0, 1024.0]
[[labels]]
name = "lesion"
code = { system = "http://radlex.org", code = "RID38780", display = "lesion" }
"#;

fn weights(desc: &str, dtype: DType) -> HashMap<String, Tensor> {
    let d: radsight_vision::import::ModelDescription = toml::from_str(desc).unwrap();
    let arch = architecture_of(&d).unwrap();
    expected_tensors(&arch)
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|k| (((k * 7 + i * 13) % 17) as f32 - 8.0) / 40.0 + if name.ends_with("N.weight") { 1.0 } else { 0.0 })
                .collect();
            (name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap())
        })
        .collect()
}

fn write(dir: &Path, desc: &str, tensors: &HashMap<String, Tensor>) -> (std::path::PathBuf, std::path::PathBuf) {
    let w = dir.join("w.safetensors");
    radsight_vision::candle_core::safetensors::save(tensors, &w).unwrap();
    let d = dir.join("d.toml");
    std::fs::write(&d, desc).unwrap();
    (w, d)
}

fn import(
    desc: &str,
    tensors: &HashMap<String, Tensor>,
) -> (tempfile::TempDir, Result<radsight_vision::import::ImportedModel, ImportError>) {
    let tmp = tempfile::tempdir().unwrap();
    let (w, d) = write(tmp.path(), desc, tensors);
    let reg = tmp.path().join("models");
    std::fs::create_dir_all(&reg).unwrap();
    let r = import_model(&w, &d, &reg);
    (tmp, r)
}

#[test]
fn a_matching_model_is_imported_and_the_registry_loads_and_runs_it() {
    let (tmp, r) = import(DESCRIPTION, &weights(DESCRIPTION, DType::F32));
    let imported = r.unwrap();
    let reg = Registry::open(tmp.path().join("models")).unwrap();
    assert_eq!(reg.verify(&imported.id).unwrap().sha256, imported.sha256);
    let card = &reg.get(&imported.id).unwrap().card;
    assert_eq!(card.labels[0].code.as_ref().unwrap().code, "RID38780");
    assert_eq!(card.input.intensity_range, Some([-1024.0, 1024.0]));
    let LoadedModel::Segmenter(seg) = reg.load_any(&imported.id).unwrap() else { panic!("a segmenter") };
    let img = radsight_vision::GrayImage::new(32, 32, vec![0.5; 1024]).unwrap();
    let s = seg.segment(&img, &Default::default()).unwrap();
    assert_eq!(s.class_map.len(), 1024);
    assert_eq!(s.regions.len(), 1);
    assert!(s.mask_png(0).unwrap().starts_with(b"\x89PNG"));
    assert!(matches!(reg.load(&imported.id), Err(radsight_vision::Error::Unsupported { .. })), "a segmenter is not a classifier");
}

#[test]
fn half_precision_weights_are_converted_to_float32_and_recorded() {
    for dtype in [DType::F16, DType::BF16] {
        let (_tmp, r) = import(DESCRIPTION, &weights(DESCRIPTION, dtype));
        let imported = r.unwrap();
        assert_eq!(imported.converted_from, vec![format!("{dtype:?}")]);
        assert!(imported.card.weights.dtype.contains("converted from"), "{}", imported.card.weights.dtype);
    }
}

#[test]
fn a_missing_mis_shaped_extra_or_integer_tensor_is_refused_by_name() {
    let good = weights(DESCRIPTION, DType::F32);
    let mut missing = good.clone();
    missing.remove("down_2.convs.conv_0.conv.weight");
    let (_t, r) = import(DESCRIPTION, &missing);
    let e = r.unwrap_err();
    assert!(matches!(&e, ImportError::MissingTensor { name, .. } if name == "down_2.convs.conv_0.conv.weight"), "{e}");
    println!("{e}");

    let mut shaped = good.clone();
    shaped.insert("final_conv.weight".into(), Tensor::zeros((3, 4, 1, 1), DType::F32, &Device::Cpu).unwrap());
    let (_t, r) = import(DESCRIPTION, &shaped);
    let e = r.unwrap_err();
    assert!(matches!(&e, ImportError::TensorShape { name, found, .. } if name == "final_conv.weight" && found == &vec![3, 4, 1, 1]), "{e}");
    println!("{e}");

    let mut extra = good.clone();
    extra.insert("aux_head.weight".into(), Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap());
    extra.insert("zz.num_batches_tracked".into(), Tensor::zeros(1, DType::I64, &Device::Cpu).unwrap());
    let (_t, r) = import(DESCRIPTION, &extra);
    let e = r.unwrap_err();
    assert!(matches!(&e, ImportError::UnexpectedTensor { name, .. } if name == "aux_head.weight"), "{e}");

    let mut int = good.clone();
    int.insert("final_conv.bias".into(), Tensor::zeros(2, DType::I64, &Device::Cpu).unwrap());
    let (_t, r) = import(DESCRIPTION, &int);
    let e = r.unwrap_err();
    assert!(matches!(&e, ImportError::TensorDtype { name, .. } if name == "final_conv.bias"), "{e}");
    println!("{e}");
}

#[test]
fn an_unknown_architecture_missing_labels_or_an_existing_id_are_refused() {
    let good = weights(DESCRIPTION, DType::F32);
    let (_t, r) = import(&DESCRIPTION.replace("basic_unet", "vit_b_16"), &good);
    assert!(matches!(r, Err(ImportError::UnknownArchitecture { .. })));
    let no_labels = DESCRIPTION.split("[[labels]]").next().unwrap().to_string();
    let (_t, r) = import(&no_labels, &good);
    assert!(matches!(r, Err(ImportError::MissingLabels)));
    let (_t, r) = import(&DESCRIPTION.replace("size = 32", "size = 40"), &good);
    assert!(matches!(r, Err(ImportError::InvalidDescription { .. })), "40 is not a multiple of 16");

    let tmp = tempfile::tempdir().unwrap();
    let (w, d) = write(tmp.path(), DESCRIPTION, &good);
    let reg = tmp.path().join("models");
    std::fs::create_dir_all(&reg).unwrap();
    import_model(&w, &d, &reg).unwrap();
    assert!(matches!(import_model(&w, &d, &reg), Err(ImportError::AlreadyExists { .. })));
    // The registry keeps serving what it had, next to the shipped model.
    assert_eq!(Registry::open(&reg).unwrap().models().len(), 1);
}

#[test]
fn the_intensity_range_and_standardisation_fold_into_the_network_input() {
    let d: radsight_vision::import::ModelDescription = toml::from_str(
        &DESCRIPTION.replace("intensity_range = [-1024.0, 1024.0]", "intensity_range = [-1024.0, 1024.0]\nmean = [24.0]\nstd = [512.0]"),
    )
    .unwrap();
    let radsight_vision::card::Architecture::BasicUnet(cfg) = architecture_of(&d).unwrap() else { panic!() };
    // x in [0, 1] -> v = -1024 + 2048 x -> (v - 24) / 512 = (x - 0.511719) / 0.25
    assert!((cfg.input_mean[0] - 1048.0 / 2048.0).abs() < 1e-6);
    assert!((cfg.input_std[0] - 0.25).abs() < 1e-6);
}
