//! EfficientNet-B0 (Tan & Le 2019) with torchvision's layout and weight names.
//!
//! Weight names: `features.0.{0,1}` (stem conv + BN), `features.{1..7}.{i}.block.{j}` (MBConv:
//! `block.0` expansion conv+BN when the expand ratio is not 1, then the depthwise conv+BN, the
//! squeeze-excitation `fc1`/`fc2` (1×1 convs with bias), and the projection conv+BN),
//! `features.8.{0,1}` (1×1 head conv + BN), `classifier.1.{weight,bias}`.
//!
//! Split for saliency: `features(x)` is the output of `features.8` (after its SiLU), the layer
//! pytorch-grad-cam users pick (`model.features[-1]`); `head` is global average pooling + the
//! linear classifier (dropout is the identity at inference). Every BatchNorm follows a
//! convolution and is folded into it. Stochastic depth is the identity at inference.

use super::layers::{ConvBn, ConvSpec, conv, standardise};
use super::{Network, gap_linear};
use candle_core::{Result, Tensor};
use candle_nn::{Conv2d, Module, VarBuilder};
use serde::{Deserialize, Serialize};

/// `(expand ratio, kernel, stride, in, out, layers)` of torchvision's B0 stages.
const B0_STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
];
const B0_STEM: usize = 32;
const B0_LAST: usize = 1280;

fn default_eps() -> f64 {
    1e-5
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EfficientNetConfig {
    /// Only `b0` is implemented.
    pub variant: String,
    pub in_channels: usize,
    pub num_labels: usize,
    pub input_mean: Vec<f32>,
    pub input_std: Vec<f32>,
    /// BatchNorm epsilon (torchvision's B0: 1e-5).
    #[serde(default = "default_eps")]
    pub bn_eps: f64,
}

impl EfficientNetConfig {
    pub fn b0(in_channels: usize, num_labels: usize) -> Self {
        Self {
            variant: "b0".into(),
            in_channels,
            num_labels,
            input_mean: vec![0.0; in_channels],
            input_std: vec![1.0; in_channels],
            bn_eps: default_eps(),
        }
    }
}

#[derive(Debug, Clone)]
struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    se_fc1: Conv2d,
    se_fc2: Conv2d,
    project: ConvBn,
    residual: bool,
}

impl MbConv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = match &self.expand {
            Some(e) => e.forward(x)?.silu()?,
            None => x.clone(),
        };
        h = self.depthwise.forward(&h)?.silu()?;
        let s = h.mean_keepdim(2)?.mean_keepdim(3)?;
        let s = candle_nn::ops::sigmoid(&self.se_fc2.forward(&self.se_fc1.forward(&s)?.silu()?)?)?;
        h = h.broadcast_mul(&s)?;
        h = self.project.forward(&h)?;
        if self.residual { h + x } else { Ok(h) }
    }

    fn macs(&self, side_in: usize) -> (u64, usize) {
        let mut total = 0;
        let mut side = side_in;
        if let Some(e) = &self.expand {
            total += e.macs(side).0;
        }
        let (m, s) = self.depthwise.macs(side);
        total += m;
        side = s;
        total += self.project.macs(side).0;
        (total, side)
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct EfficientNet {
    config: EfficientNetConfig,
    stem: ConvBn,
    blocks: Vec<MbConv>,
    last: ConvBn,
    fc_w: Tensor,
    fc_b: Tensor,
}

impl EfficientNet {
    pub fn new(config: &EfficientNetConfig, vb: VarBuilder) -> Result<Self> {
        if config.variant != "b0" {
            candle_core::bail!("efficientnet variant {:?} not supported (b0)", config.variant);
        }
        if config.input_mean.len() != config.in_channels || config.input_std.len() != config.in_channels {
            candle_core::bail!("efficientnet: input_mean/input_std need one value per input channel");
        }
        let eps = config.bn_eps;
        let f = vb.pp("features");
        let stem = ConvBn::load(&f, "0.0", "0.1", ConvSpec::new(config.in_channels, B0_STEM, 3, 2), eps)?;
        let mut blocks = Vec::new();
        for (s, &(expand, k, stride, c_in, c_out, n)) in B0_STAGES.iter().enumerate() {
            for i in 0..n {
                let p = f.pp(format!("{}.{i}.block", s + 1));
                let cin = if i == 0 { c_in } else { c_out };
                let st = if i == 0 { stride } else { 1 };
                let wide = cin * expand;
                let mut j = 0;
                let mut next = || {
                    j += 1;
                    j - 1
                };
                let expand_conv = if expand != 1 {
                    let j = next();
                    Some(ConvBn::load(&p, &format!("{j}.0"), &format!("{j}.1"), ConvSpec::new(cin, wide, 1, 1), eps)?)
                } else {
                    None
                };
                let jd = next();
                let depthwise =
                    ConvBn::load(&p, &format!("{jd}.0"), &format!("{jd}.1"), ConvSpec::new(wide, wide, k, st).groups(wide), eps)?;
                let js = next();
                let squeeze = (cin / 4).max(1);
                let se_fc1 = conv(&p, &format!("{js}.fc1"), ConvSpec::new(wide, squeeze, 1, 1), true)?;
                let se_fc2 = conv(&p, &format!("{js}.fc2"), ConvSpec::new(squeeze, wide, 1, 1), true)?;
                let jp = next();
                let project = ConvBn::load(&p, &format!("{jp}.0"), &format!("{jp}.1"), ConvSpec::new(wide, c_out, 1, 1), eps)?;
                blocks.push(MbConv { expand: expand_conv, depthwise, se_fc1, se_fc2, project, residual: st == 1 && cin == c_out });
            }
        }
        let last = ConvBn::load(&f, "8.0", "8.1", ConvSpec::new(B0_STAGES[6].4, B0_LAST, 1, 1), eps)?;
        let fc_w = vb.get((config.num_labels, B0_LAST), "classifier.1.weight")?;
        let fc_b = vb.get(config.num_labels, "classifier.1.bias")?;
        Ok(Self { config: config.clone(), stem, blocks, last, fc_w, fc_b })
    }

    pub fn config(&self) -> &EfficientNetConfig {
        &self.config
    }
}

impl Network for EfficientNet {
    fn features(&self, x: &Tensor) -> Result<Tensor> {
        let x = standardise(x, &self.config.input_mean, &self.config.input_std)?;
        let mut h = self.stem.forward(&x)?.silu()?;
        for b in &self.blocks {
            h = b.forward(&h)?;
        }
        self.last.forward(&h)?.silu()
    }

    fn head(&self, a: &Tensor) -> Result<Tensor> {
        gap_linear(a, &self.fc_w, &self.fc_b)
    }

    fn target_layer(&self) -> String {
        "features.8".into()
    }

    fn in_channels(&self) -> usize {
        self.config.in_channels
    }

    fn macs(&self, size: usize) -> u64 {
        let (mut total, mut side) = self.stem.macs(size);
        for b in &self.blocks {
            let (m, s) = b.macs(side);
            total += m;
            side = s;
        }
        total + self.last.macs(side).0 + (self.fc_w.dims()[0] * self.fc_w.dims()[1]) as u64
    }
}
