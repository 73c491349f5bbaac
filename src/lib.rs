//! Pneumonia detection in pediatric chest X-rays with candle: one crate that re-exports the
//! workspace's parts and the glue the example programs share.
//!
//! - [`data`]: reading, patient-level splits, preprocessing, augmentation;
//! - [`ops`]: the fused candle ops the models run on;
//! - [`models`]: a from-scratch CNN and MobileNetV2 (torchvision layout);
//! - [`infer`]: model bundles, prediction with refer, saliency of a prediction;
//! - [`train`]: a device-generic trainer;
//! - [`eval`]: metrics, thresholds, saliency maps.
//!
//! Decision support for radiologists only: not a diagnosis (see [`eval::DISCLAIMER`]).

#![warn(missing_docs)]

pub mod comparison;
mod error;
pub mod evaluation;
pub mod explain;
pub mod faithfulness;
pub mod pipeline;
pub mod prediction;
pub mod recipes;
pub mod scoring;
pub mod secondary_capture;

pub use error::{Error, ErrorKind};
pub use xray_data as data;
pub use xray_eval as eval;
pub use xray_infer as infer;
pub use xray_models as models;
pub use xray_ops as ops;
pub use xray_train as train;

// The README's library example runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
