//! Fast candle ops for the chest X-ray models, each a candle custom op with a hand-written
//! backward, so that candle's autograd sees one node where its own ops would build many:
//!
//! - [`depthwise_conv2d`] and [`depthwise_conv2d_bias_act`]: one filter per channel (CPU, and
//!   CUDA behind the `cuda` feature; other devices fall back to candle's grouped convolution);
//! - [`pointwise_conv2d`] and [`pointwise_conv2d_bias_act`]: 1x1 convolutions as matrix products;
//! - [`inverted_residual`]: MobileNetV2's whole inverted-residual block (expansion, depthwise,
//!   projection, residual) as one node, its expanded gradients kept inside;
//! - [`dense_conv2d`]: a dense convolution, image by image through a column matrix;
//! - [`BatchNormRelu`]: BatchNorm and ReLU in one pass, in training and in evaluation, and with
//!   the 2x2 max-pooling after it as one op ([`BatchNormRelu::forward_pooled_t`]);
//! - [`bias_relu6`]: a per-channel bias with an optional ReLU6;
//! - [`max_pool_2x2`]: 2x2 max-pooling whose gradient goes to each window's first maximum.
//!
//! Every op is checked against an independent reference, forward and backward
//! (`crates/xray-ops/tests`). [`process`] holds the allocator settings a binary may apply;
//! [`isa`] says which vector instructions the kernels run with on this machine.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! # fn main() -> candle_core::Result<()> {
//! let x = Tensor::ones((1, 2, 4, 4), candle_core::DType::F32, &Device::Cpu)?;
//! let w = Tensor::ones((2, 1, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
//! let y = xray_ops::depthwise_conv2d(&x, &w, 1, 1)?;
//! // The centre of a 4x4 plane of ones sees all nine taps.
//! assert_eq!(y.dims(), &[1, 2, 4, 4]);
//! assert_eq!(y.get(0)?.get(0)?.get(1)?.get(1)?.to_scalar::<f32>()?, 9.0);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod batch_norm_relu;
mod bias_act;
mod cpu_storage;
mod dense_conv;
mod depthwise;
mod geometry;
mod im2col;
mod inverted_residual;
pub mod isa;
mod matmul;
mod max_pool;
mod norm_relu_pool;
mod pointwise;
pub mod process;
mod scratch;
mod tracked;
mod uninit;

pub use batch_norm_relu::BatchNormRelu;
pub use bias_act::bias_relu6;
pub use dense_conv::dense_conv2d;
pub use depthwise::{depthwise_conv2d, depthwise_conv2d_bias_act};
pub use inverted_residual::{inverted_residual, InvertedResidualWeights};
pub use max_pool::max_pool_2x2;
pub use pointwise::{pointwise_conv2d, pointwise_conv2d_bias_act};
