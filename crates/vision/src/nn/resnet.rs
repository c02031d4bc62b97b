//! ResNet-18/34/50 (torchvision layout and weight names) re-implemented so that `layer4`'s
//! output is reachable for Grad-CAM.
//!
//! Weight names are torchvision's: `conv1.weight`, `bn1.{weight,bias,running_mean,running_var}`,
//! `layer{1..4}.{i}.conv{1,2[,3]}.weight`, `layer{l}.{i}.bn{n}.*`,
//! `layer{l}.{i}.downsample.{0,1}.*`, `fc.{weight,bias}`; `num_batches_tracked` is ignored.
//! BatchNorm is inference-only: each BN is folded into the preceding convolution at load time
//! (`Conv2d::absorb_bn`, eps 1e-5), which is exact in eval mode.
//!
//! `in_channels = 1` gives a grayscale stem (`conv1.weight` of shape `(64, 1, 7, 7)`); with 3,
//! a grayscale image is repeated across channels. The stem's 3×3/2 max-pool has no backward in
//! candle, so integrated gradients are unavailable on ResNets (Grad-CAM and occlusion work).

use super::{Network, conv_out, gap_linear};
use candle_core::{Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Module, VarBuilder};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResNetConfig {
    /// 18, 34 or 50.
    pub depth: usize,
    pub in_channels: usize,
    pub num_labels: usize,
    /// Per-channel standardisation applied inside the network (ImageNet's by default).
    pub input_mean: Vec<f32>,
    pub input_std: Vec<f32>,
}

impl ResNetConfig {
    pub fn new(depth: usize, in_channels: usize, num_labels: usize) -> Self {
        let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
        let (input_mean, input_std) =
            if in_channels == 3 { (mean.to_vec(), std.to_vec()) } else { (vec![0.449; in_channels], vec![0.226; in_channels]) };
        Self { depth, in_channels, num_labels, input_mean, input_std }
    }

    fn layout(&self) -> Result<(&'static [usize; 4], bool)> {
        match self.depth {
            18 => Ok((&[2, 2, 2, 2], false)),
            34 => Ok((&[3, 4, 6, 3], false)),
            50 => Ok((&[3, 4, 6, 3], true)),
            d => candle_core::bail!("resnet depth {d} not supported (18, 34, 50)"),
        }
    }
}

/// A convolution with its BatchNorm folded in.
#[derive(Debug, Clone)]
struct ConvBn {
    conv: Conv2d,
    kernel: usize,
    stride: usize,
    c_in: usize,
    c_out: usize,
}

impl ConvBn {
    fn load(vb: &VarBuilder, conv: &str, bn: &str, c_in: usize, c_out: usize, k: usize, stride: usize) -> Result<Self> {
        let cfg = Conv2dConfig { padding: k / 2, stride, ..Default::default() };
        let c = candle_nn::conv2d_no_bias(c_in, c_out, k, cfg, vb.pp(conv))?;
        let b = candle_nn::batch_norm(c_out, 1e-5, vb.pp(bn))?;
        Ok(Self { conv: c.absorb_bn(&b)?, kernel: k, stride, c_in, c_out })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(x)
    }
    fn macs(&self, side_in: usize) -> (u64, usize) {
        let side = conv_out(side_in, self.kernel, self.stride, self.kernel / 2);
        ((side * side * self.c_out * self.c_in * self.kernel * self.kernel) as u64, side)
    }
}

#[derive(Debug, Clone)]
struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, c) in self.convs.iter().enumerate() {
            h = c.forward(&h)?;
            if i + 1 < self.convs.len() {
                h = h.relu()?;
            }
        }
        let shortcut = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        (h + shortcut)?.relu()
    }
    fn macs(&self, side_in: usize) -> (u64, usize) {
        let (mut total, mut side) = (0, side_in);
        for c in &self.convs {
            let (m, s) = c.macs(side);
            total += m;
            side = s;
        }
        if let Some(d) = &self.downsample {
            total += d.macs(side_in).0;
        }
        (total, side)
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct ResNet {
    config: ResNetConfig,
    stem: ConvBn,
    blocks: Vec<Block>,
    fc_w: Tensor,
    fc_b: Tensor,
}

impl ResNet {
    pub fn new(config: &ResNetConfig, vb: VarBuilder) -> Result<Self> {
        let (counts, bottleneck) = config.layout()?;
        if config.input_mean.len() != config.in_channels || config.input_std.len() != config.in_channels {
            candle_core::bail!("resnet: input_mean/input_std need one value per input channel");
        }
        let stem = ConvBn::load(&vb, "conv1", "bn1", config.in_channels, 64, 7, 2)?;
        let expansion = if bottleneck { 4 } else { 1 };
        let mut blocks = Vec::new();
        let mut c_in = 64;
        for (l, &n) in counts.iter().enumerate() {
            let planes = 64 << l;
            for i in 0..n {
                let stride = if i == 0 && l > 0 { 2 } else { 1 };
                let p = format!("layer{}.{i}", l + 1);
                let vbb = vb.pp(&p);
                let convs = if bottleneck {
                    vec![
                        ConvBn::load(&vbb, "conv1", "bn1", c_in, planes, 1, 1)?,
                        ConvBn::load(&vbb, "conv2", "bn2", planes, planes, 3, stride)?,
                        ConvBn::load(&vbb, "conv3", "bn3", planes, planes * expansion, 1, 1)?,
                    ]
                } else {
                    vec![
                        ConvBn::load(&vbb, "conv1", "bn1", c_in, planes, 3, stride)?,
                        ConvBn::load(&vbb, "conv2", "bn2", planes, planes, 3, 1)?,
                    ]
                };
                let downsample = if stride != 1 || c_in != planes * expansion {
                    Some(ConvBn::load(&vbb, "downsample.0", "downsample.1", c_in, planes * expansion, 1, stride)?)
                } else {
                    None
                };
                blocks.push(Block { convs, downsample });
                c_in = planes * expansion;
            }
        }
        let fc_w = vb.get((config.num_labels, c_in), "fc.weight")?;
        let fc_b = vb.get(config.num_labels, "fc.bias")?;
        Ok(Self { config: config.clone(), stem, blocks, fc_w, fc_b })
    }

    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }
}

impl Network for ResNet {
    fn features(&self, x: &Tensor) -> Result<Tensor> {
        let dev = x.device();
        let c = self.config.in_channels;
        let mean = Tensor::from_slice(&self.config.input_mean, (1, c, 1, 1), dev)?;
        let std = Tensor::from_slice(&self.config.input_std, (1, c, 1, 1), dev)?;
        let x = x.broadcast_sub(&mean)?.broadcast_div(&std)?;
        let h = self.stem.forward(&x)?.relu()?;
        // 3×3/2 max-pool with padding 1: inputs are ≥ 0 after ReLU, so zero padding is exact.
        let h = h.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
        let mut h = h.max_pool2d_with_stride(3, 2)?;
        for b in &self.blocks {
            h = b.forward(&h)?;
        }
        Ok(h)
    }

    fn head(&self, a: &Tensor) -> Result<Tensor> {
        gap_linear(a, &self.fc_w, &self.fc_b)
    }

    fn target_layer(&self) -> String {
        "layer4".into()
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
        for b in &self.blocks {
            let (m, s) = b.macs(side);
            total += m;
            side = s;
        }
        total + (self.fc_w.dims()[0] * self.fc_w.dims()[1]) as u64
    }
}
