//! Pneumonia detection in pediatric chest X-rays with candle: one crate that re-exports the
//! workspace's parts and the glue the example programs share.
//!
//! - [`data`]: reading, patient-level splits, preprocessing, augmentation;
//! - [`models`]: a from-scratch CNN and MobileNetV2 (torchvision layout);
//! - [`train`]: a device-generic trainer and model bundles;
//! - [`eval`]: metrics, thresholds, saliency maps.
//!
//! Decision support for radiologists only: not a diagnosis (see [`eval::DISCLAIMER`]).

#![warn(missing_docs)]

pub mod evaluation;
pub mod explain;
pub mod pipeline;

pub use xray_data as data;
pub use xray_eval as eval;
pub use xray_models as models;
pub use xray_train as train;
