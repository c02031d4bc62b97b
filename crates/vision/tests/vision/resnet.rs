//! ResNet-18 with torchvision weight names: loads, runs forward, and Grad-CAM produces a map.

use radsight_vision::candle_core::{DType, Device, Tensor};
use radsight_vision::candle_nn::{VarBuilder, VarMap};
use radsight_vision::nn::Network;
use radsight_vision::nn::resnet::{ResNet, ResNetConfig};
use radsight_vision::saliency::{grad_cam, integrated_gradients_raw};
use radsight_vision::train::init_vars;
use std::collections::{BTreeSet, HashMap};

/// torchvision's resnet18 state_dict keys (minus `num_batches_tracked`).
fn torchvision_resnet18_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let bn = |keys: &mut BTreeSet<String>, p: &str| {
        for s in ["weight", "bias", "running_mean", "running_var"] {
            keys.insert(format!("{p}.{s}"));
        }
    };
    keys.insert("conv1.weight".into());
    bn(&mut keys, "bn1");
    for l in 1..=4 {
        for b in 0..2 {
            let p = format!("layer{l}.{b}");
            keys.insert(format!("{p}.conv1.weight"));
            bn(&mut keys, &format!("{p}.bn1"));
            keys.insert(format!("{p}.conv2.weight"));
            bn(&mut keys, &format!("{p}.bn2"));
            if l > 1 && b == 0 {
                keys.insert(format!("{p}.downsample.0.weight"));
                bn(&mut keys, &format!("{p}.downsample.1"));
            }
        }
    }
    keys.insert("fc.weight".into());
    keys.insert("fc.bias".into());
    keys
}

/// Random weights under torchvision's names, written to safetensors bytes (with the
/// `num_batches_tracked` entries torchvision also saves).
fn random_resnet18_safetensors(config: &ResNetConfig) -> Vec<u8> {
    let varmap = VarMap::new();
    ResNet::new(config, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    init_vars(&varmap, 18).unwrap();
    let mut tensors: HashMap<String, Tensor> =
        varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
    let names: BTreeSet<String> = tensors.keys().cloned().collect();
    assert_eq!(names, torchvision_resnet18_keys(), "our ResNet-18 asks for exactly torchvision's names");
    for k in names.iter().filter(|k| k.ends_with("running_var")) {
        let nbt = k.replace("running_var", "num_batches_tracked");
        tensors.insert(nbt, Tensor::new(&[100i64], &Device::Cpu).unwrap().squeeze(0).unwrap());
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("resnet18.safetensors");
    radsight_vision::candle_core::safetensors::save(&tensors, &path).unwrap();
    std::fs::read(path).unwrap()
}

#[test]
fn resnet18_with_torchvision_names_loads_runs_forward_and_gives_a_grad_cam_map() {
    let config = ResNetConfig::new(18, 1, 3);
    let bytes = random_resnet18_safetensors(&config);
    let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu).unwrap();
    let net = ResNet::new(&config, vb).unwrap();

    let x = Tensor::rand(0f32, 1f32, (2, 1, 128, 128), &Device::Cpu).unwrap();
    let a = net.features(&x).unwrap();
    assert_eq!(a.dims(), [2, 512, 4, 4]);
    assert_eq!(net.forward(&x).unwrap().dims(), [2, 3]);
    assert_eq!(net.target_layer(), "layer4");

    let x1 = x.narrow(0, 0, 1).unwrap();
    let s = grad_cam(&net, &x1, 1, "finding").unwrap();
    assert_eq!((s.width, s.height, s.map.len()), (128, 128, 128 * 128));
    assert!(s.map.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(s.raw_max >= 0.0);
    assert!(integrated_gradients_raw(&net, &x1, 0, 4, 0.0).is_err(), "IG is refused (max-pool has no backward)");
    // ~1.8 GMAC at 224x224 with 3 channels, as torchvision's ResNet-18 is usually quoted.
    let macs = ResNet::new(&ResNetConfig::new(18, 3, 1000), VarBuilder::zeros(DType::F32, &Device::Cpu)).unwrap().macs(224);
    assert!((1.75e9..1.9e9).contains(&(macs as f64)), "{macs}");
}

#[test]
fn resnet34_and_50_build_with_torchvision_shapes() {
    for (depth, channels) in [(34, 512), (50, 2048)] {
        let config = ResNetConfig::new(depth, 3, 2);
        let net = ResNet::new(&config, VarBuilder::zeros(DType::F32, &Device::Cpu)).unwrap();
        let x = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(net.features(&x).unwrap().dims(), [1, channels, 2, 2]);
    }
}
