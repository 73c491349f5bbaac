//! Training for the chest X-ray classifiers on any candle [`Device`](candle_core::Device)
//! (CPU, CUDA, Metal): AdamW, class-weighted binary cross-entropy on the logit, warm-up and
//! cosine learning-rate schedule, early stopping on validation ROC AUC with the best weights
//! kept, one JSON record per epoch, and self-describing model bundles.

#![warn(missing_docs)]

mod batches;
mod bundle;
mod early_stop;
mod error;
mod loss;
mod schedule;
mod trainer;

pub use batches::{BatchSource, FeatureBatches, ImageBatches};
pub use bundle::{
    appearance, Bundle, BundleConfig, DataRecord, NamedThreshold, OodStatistics, Prediction,
    SplitRecord, ThresholdChoice, TrainingRecord, APPEARANCE_DIM, APPEARANCE_SIDE,
    BUNDLE_FORMAT_VERSION,
};
pub use early_stop::{EarlyStopping, Progress};
pub use error::TrainError;
pub use loss::{class_weights, weighted_bce_with_logits};
pub use schedule::LrSchedule;
pub use trainer::{fit, predict_probabilities, EpochRecord, TrainConfig, TrainReport, TrainTarget};
