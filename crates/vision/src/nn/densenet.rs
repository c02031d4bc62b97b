//! DenseNet-121 (Huang et al. 2017) with torchvision's layout and weight names, as CheXNet and
//! TorchXRayVision ship it (TorchXRayVision uses a 1-channel `features.conv0`).
//!
//! Weight names: `features.conv0.weight`, `features.norm0.*`,
//! `features.denseblock{b}.denselayer{l}.{norm1,conv1,norm2,conv2}.*`,
//! `features.transition{t}.{norm,conv}.*`, `features.norm5.*`, `classifier.{weight,bias}`
//! (`*` = `weight`, `bias`, `running_mean`, `running_var`; `num_batches_tracked` is ignored).
//!
//! Split for saliency: `features(x)` ends with `features.norm5` (the layer pytorch-grad-cam
//! users pick, `model.features[-1]`); `head` is the ReLU torchvision applies before pooling,
//! global average pooling and `classifier`. torchvision's (and TorchXRayVision's)
//! `F.relu(features, inplace=True)` overwrites the norm5 output that a forward hook saved,
//! while the gradient hook sees the gradient at norm5 (masked by the ReLU); so Grad-CAM on
//! `features.norm5` in PyTorch weighs `ReLU(norm5)` with `α_k = mean ∂y/∂norm5_k`. radsight
//! does the same ([`Network::cam_activations`] is the ReLU), which the parity test checks
//! against pytorch-grad-cam 1.5.7.
//!
//! Inference: `norm0` and each layer's `norm2` are folded into the convolution before them;
//! the pre-activation norms (`norm1`, transition `norm`, `norm5`) act on concatenated features
//! and stay per-channel affine maps. In a transition the 2×2 average pool is applied before
//! the 1×1 convolution (both are linear, so they commute), which quarters that convolution.
//! The stem's 3×3/2 max-pool has no backward in candle, so integrated gradients are
//! unavailable (Grad-CAM and occlusion work).

use super::layers::{BnAffine, ConvBn, ConvSpec, conv, max_pool_3x3_s2_p1, standardise};
use super::{Network, conv_out, gap_linear};
use candle_core::{Result, Tensor};
use candle_nn::{Conv2d, Module, VarBuilder};
use serde::{Deserialize, Serialize};

const BN_EPS: f64 = 1e-5;

/// Hyper-parameters; [`DenseNetConfig::densenet121`] gives torchvision's DenseNet-121.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DenseNetConfig {
    pub growth_rate: usize,
    pub block_config: Vec<usize>,
    pub num_init_features: usize,
    pub bn_size: usize,
    pub in_channels: usize,
    pub num_labels: usize,
    /// Per-channel standardisation of the [0, 1] input inside the network.
    pub input_mean: Vec<f32>,
    pub input_std: Vec<f32>,
}

impl DenseNetConfig {
    pub fn densenet121(in_channels: usize, num_labels: usize) -> Self {
        Self {
            growth_rate: 32,
            block_config: vec![6, 12, 24, 16],
            num_init_features: 64,
            bn_size: 4,
            in_channels,
            num_labels,
            input_mean: vec![0.0; in_channels],
            input_std: vec![1.0; in_channels],
        }
    }
}

#[derive(Debug, Clone)]
struct DenseLayer {
    norm1: BnAffine,
    /// conv1 with norm2 folded in.
    conv1: ConvBn,
    conv2: Conv2d,
    c_in: usize,
    growth: usize,
}

impl DenseLayer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.norm1.forward(x)?.relu()?;
        let h = self.conv1.forward(&h)?.relu()?;
        self.conv2.forward(&h)
    }
}

#[derive(Debug, Clone)]
struct Transition {
    norm: BnAffine,
    conv: Conv2d,
    c_in: usize,
    c_out: usize,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct DenseNet {
    config: DenseNetConfig,
    stem: ConvBn,
    blocks: Vec<Vec<DenseLayer>>,
    transitions: Vec<Transition>,
    norm5: BnAffine,
    fc_w: Tensor,
    fc_b: Tensor,
}

impl DenseNet {
    pub fn new(config: &DenseNetConfig, vb: VarBuilder) -> Result<Self> {
        if config.input_mean.len() != config.in_channels || config.input_std.len() != config.in_channels {
            candle_core::bail!("densenet: input_mean/input_std need one value per input channel");
        }
        let f = vb.pp("features");
        let mut c = config.num_init_features;
        let stem = ConvBn::load(&f, "conv0", "norm0", ConvSpec { padding: 3, ..ConvSpec::new(config.in_channels, c, 7, 2) }, BN_EPS)?;
        let (mut blocks, mut transitions) = (Vec::new(), Vec::new());
        let inner = config.bn_size * config.growth_rate;
        for (b, &n) in config.block_config.iter().enumerate() {
            let mut layers = Vec::with_capacity(n);
            for l in 0..n {
                let p = f.pp(format!("denseblock{}.denselayer{}", b + 1, l + 1));
                layers.push(DenseLayer {
                    norm1: BnAffine::load(&p, "norm1", c, BN_EPS)?,
                    conv1: ConvBn::load(&p, "conv1", "norm2", ConvSpec::new(c, inner, 1, 1), BN_EPS)?,
                    conv2: conv(&p, "conv2", ConvSpec::new(inner, config.growth_rate, 3, 1), false)?,
                    c_in: c,
                    growth: config.growth_rate,
                });
                c += config.growth_rate;
            }
            blocks.push(layers);
            if b + 1 < config.block_config.len() {
                let p = f.pp(format!("transition{}", b + 1));
                let out = c / 2;
                transitions.push(Transition {
                    norm: BnAffine::load(&p, "norm", c, BN_EPS)?,
                    conv: conv(&p, "conv", ConvSpec::new(c, out, 1, 1), false)?,
                    c_in: c,
                    c_out: out,
                });
                c = out;
            }
        }
        let norm5 = BnAffine::load(&f, "norm5", c, BN_EPS)?;
        let fc_w = vb.get((config.num_labels, c), "classifier.weight")?;
        let fc_b = vb.get(config.num_labels, "classifier.bias")?;
        Ok(Self { config: config.clone(), stem, blocks, transitions, norm5, fc_w, fc_b })
    }

    pub fn config(&self) -> &DenseNetConfig {
        &self.config
    }
}

impl Network for DenseNet {
    fn features(&self, x: &Tensor) -> Result<Tensor> {
        let x = standardise(x, &self.config.input_mean, &self.config.input_std)?;
        let mut h = max_pool_3x3_s2_p1(&self.stem.forward(&x)?.relu()?)?;
        for (b, layers) in self.blocks.iter().enumerate() {
            let mut parts = vec![h];
            for layer in layers {
                let input = if parts.len() == 1 { parts[0].clone() } else { Tensor::cat(&parts, 1)? };
                parts.push(layer.forward(&input)?);
            }
            h = Tensor::cat(&parts, 1)?;
            if let Some(t) = self.transitions.get(b) {
                h = t.norm.forward(&h)?.relu()?.avg_pool2d(2)?;
                h = t.conv.forward(&h)?;
            }
        }
        self.norm5.forward(&h)
    }

    fn head(&self, a: &Tensor) -> Result<Tensor> {
        gap_linear(&a.relu()?, &self.fc_w, &self.fc_b)
    }

    fn cam_activations(&self, a: &Tensor) -> Result<Tensor> {
        a.relu()
    }

    fn target_layer(&self) -> String {
        "features.norm5".into()
    }

    fn in_channels(&self) -> usize {
        self.config.in_channels
    }

    fn input_differentiable(&self) -> bool {
        false
    }

    fn macs(&self, size: usize) -> u64 {
        let (mut total, side) = self.stem.macs(size);
        let mut side = conv_out(side, 3, 2, 1);
        for (b, layers) in self.blocks.iter().enumerate() {
            for l in layers {
                let hw = (side * side) as u64;
                total += hw * (l.c_in * l.conv1.c_out) as u64 + hw * (l.conv1.c_out * l.growth * 9) as u64;
            }
            if let Some(t) = self.transitions.get(b) {
                side /= 2;
                total += (side * side * t.c_in * t.c_out) as u64;
            }
        }
        total + (self.fc_w.dims()[0] * self.fc_w.dims()[1]) as u64
    }
}
