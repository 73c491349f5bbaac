//! Pneumonia classifiers for candle: a from-scratch CNN and ImageNet-pretrained MobileNetV2 in
//! torchvision's tensor layout. Their layers run on the fused ops of [`xray_ops`] (depthwise,
//! 1x1 and dense convolutions, BatchNorm+ReLU, bias+ReLU6, 2x2 max-pooling).
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

mod classifier;
mod conv_norm;
mod error;
mod init;
mod inverted_residual;
mod mobilenetv2;
mod norm;
mod scratch_cnn;
mod weights;

pub use classifier::{Architecture, Classifier};
pub use conv_norm::{Conv, ConvKind, ConvNormAct};
pub use error::ModelError;
pub use init::seeded_init;
pub use inverted_residual::InvertedResidual;
pub use mobilenetv2::{MobileNetV2, MobileNetV2Config, MOBILENET_V2_FEATURES, MOBILENET_V2_STAGES};
pub use norm::FrozenBatchNorm;
pub use scratch_cnn::{ScratchCnn, ScratchCnnConfig};
pub use weights::{load_weights_strict, load_weights_strict_from_bytes};
