//! Inference for the chest X-ray models: load a trained bundle, predict on a film of any size,
//! and explain the prediction with a saliency map at the film's size.
//!
//! A [`Prediction`] carries the probability, the calibrated probability, the decision at a
//! named operating point (pneumonia, normal, or **refer** when the film is unlike the training
//! films, degenerate, or in the bundle's band of uncertain probabilities) and the
//! out-of-distribution score. Every error is an [`InferError`].
//!
//! ```
//! # fn main() -> Result<(), xray_infer::InferError> {
//! use xray_infer::{read_film, Bundle, Method};
//! let bundle = Bundle::load("../../models/scratch_cnn".as_ref(), &candle_core::Device::Cpu)?;
//! let film = read_film("../../../shared/data/kermany224/train/NORMAL/IM-0115-0001.jpeg".as_ref())?;
//! let prediction = bundle.predict(&film)?;
//! let map = bundle.explain(&film, Method::Vanilla)?;
//! assert_eq!((map.width, map.height), film.dimensions());
//! println!("{} ({:.3}); {}", prediction.decision, prediction.calibrated_probability, xray_infer::DISCLAIMER);
//! # Ok(()) }
//! ```
//!
//! Decision support for radiologists only: not a diagnosis ([`DISCLAIMER`]).

#![warn(missing_docs)]

mod bundle;
mod config;
mod decision;
mod error;
mod explain;
mod ood;
mod population;
mod predict;

pub use bundle::{hex, Bundle, DEFAULT_BATCH_SIZE};
pub use config::{
    split_origin, BundleConfig, DataRecord, NamedThreshold, ReferBand, SplitRecord,
    ThresholdChoice, TrainingRecord, BUNDLE_FORMAT_VERSION,
};
pub use decision::{
    age_in_years, degenerate, header_reasons, Decision, OperatingPoint, ReferReason, MAX_AGE_YEARS,
    MIN_FILM_SIDE, MIN_FILM_STD,
};
pub use error::InferError;
pub use explain::{saliency, IgBaseline, Method, MethodSettings, References};
pub use ood::{
    appearance, population_vectors, OodStatistics, APPEARANCE_DIM, APPEARANCE_SIDE, OOD_QUANTILE,
};
pub use population::{PopulationDetector, PopulationFit};
pub use predict::{read_film, read_film_with_header, Prediction};
pub use xray_data::{DicomInfo, GrayImage};
pub use xray_eval::{SaliencyMap, DISCLAIMER};
