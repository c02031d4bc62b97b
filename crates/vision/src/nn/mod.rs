//! Network architectures. Every network is split at its saliency target layer:
//! `features(x) -> A` (the last convolutional block's activations, `(B, K, h, w)`) and
//! `head(A) -> logits` (`(B, labels)`), so saliency can wrap `A` in a `Var` and backpropagate
//! through the head alone (candle records gradients only from `Var`s).
//!
//! **Invariant:** `forward(x) == head(features(x))`; networks hold constants (no `Var`s) at
//! inference time, so a forward pass never records a graph unless the caller wraps a tensor.

pub mod compact;
pub mod densenet;
pub mod efficientnet;
pub(crate) mod layers;
pub mod resnet;
pub mod unet;

use candle_core::{Result, Tensor};

/// A classifier split at the saliency target layer.
pub trait Network: Send + Sync {
    /// Last convolutional block's activations for a normalised-to-[0,1] input `(B, C, H, W)`.
    fn features(&self, x: &Tensor) -> Result<Tensor>;
    /// Logits `(B, labels)` from the activations.
    fn head(&self, a: &Tensor) -> Result<Tensor>;
    /// Logits from the input.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.head(&self.features(x)?)
    }
    /// The activations Grad-CAM weighs with its `α_k`, from `features`' output `a` (default:
    /// `a` itself). DenseNet returns `ReLU(a)`: see [`densenet`] for why.
    fn cam_activations(&self, a: &Tensor) -> Result<Tensor> {
        Ok(a.clone())
    }
    /// The name of the layer `features` returns (recorded with Grad-CAM results).
    fn target_layer(&self) -> String;
    /// Input channels; a grayscale image is repeated across them.
    fn in_channels(&self) -> usize;
    /// Whether gradients flow from the logits back to the input (integrated gradients need
    /// it; candle's max-pool with kernel ≠ stride has no backward).
    fn input_differentiable(&self) -> bool {
        true
    }
    /// Where feature cell `(0, 0)`'s centre sits in the input, in continuous pixel coordinates
    /// (pixel `j` spans `[j, j + 1)`), for Grad-CAM's upsampling; cell `i` is at
    /// `origin + i · input/feature`. `None`: half-pixel centres (`stride / 2`, OpenCV / PyTorch
    /// `align_corners=False`).
    fn feature_origin(&self) -> Option<f32> {
        None
    }
    /// Multiply-accumulate count of one forward pass at `size`×`size` (for benchmarks).
    fn macs(&self, size: usize) -> u64;
}

/// GAP + linear head shared by the architectures: mean over (h, w), then `x Wᵀ + b`.
pub(crate) fn gap_linear(a: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let pooled = a.mean((2, 3))?;
    pooled.matmul(&weight.t()?)?.broadcast_add(bias)
}

/// Output side of a convolution.
pub(crate) fn conv_out(size: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    (size + 2 * padding - kernel) / stride + 1
}
