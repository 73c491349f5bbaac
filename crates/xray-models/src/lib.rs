//! Pneumonia classifiers for candle: a from-scratch CNN and ImageNet-pretrained MobileNetV2 in
//! torchvision's tensor layout, plus the CPU ops that make them fast: depthwise convolution,
//! 1x1 and dense convolutions as matrix products, BatchNorm+ReLU, bias+ReLU6 and 2x2
//! max-pooling, each with its backward.
//!
//! Loading the shared ImageNet weights into a pneumonia model (a new one-logit head):
//! ```no_run
//! use candle_core::{DType, Device};
//! use candle_nn::{VarBuilder, VarMap};
//! use xray_models::{load_weights_strict, Architecture, Classifier, MobileNetV2Config};
//! # fn main() -> Result<(), xray_models::ModelError> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let model = Classifier::new(&Architecture::MobileNetV2(MobileNetV2Config::pneumonia()), vb)?;
//! let weights = "../shared/weights/mobilenet_v2_imagenet_keras_int8.safetensors";
//! load_weights_strict(&varmap, weights.as_ref(), &["classifier."])?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod batch_norm_relu;
mod bias_act;
mod classifier;
mod conv_norm;
mod cpu_storage;
mod dense_conv;
mod depthwise;
mod error;
mod im2col;
mod init;
mod inverted_residual;
mod matmul;
mod max_pool;
mod mobilenetv2;
mod norm;
mod pointwise;
mod scratch_cnn;
mod tracked;
mod weights;

pub use batch_norm_relu::BatchNormRelu;
pub use bias_act::bias_relu6;
pub use classifier::{Architecture, Classifier};
pub use conv_norm::{Conv, ConvKind, ConvNormAct};
pub use dense_conv::dense_conv2d;
pub use depthwise::{depthwise_conv2d, depthwise_conv2d_bias_act};
pub use error::ModelError;
pub use init::seeded_init;
pub use inverted_residual::InvertedResidual;
pub use max_pool::max_pool_2x2;
pub use mobilenetv2::{MobileNetV2, MobileNetV2Config, MOBILENET_V2_FEATURES, MOBILENET_V2_STAGES};
pub use norm::FrozenBatchNorm;
pub use pointwise::{pointwise_conv2d, pointwise_conv2d_bias_act};
pub use scratch_cnn::{ScratchCnn, ScratchCnnConfig};
pub use weights::load_weights_strict;
