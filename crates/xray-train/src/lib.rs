//! Training for the chest X-ray classifiers on any candle [`Device`](candle_core::Device)
//! (CPU, CUDA, Metal): a [`Trainer`] with AdamW, a warm-up and cosine learning-rate schedule,
//! a pluggable loss (class-weighted binary cross-entropy on the logit by default), early
//! stopping on a pluggable validation metric (ROC AUC by default) with the best weights kept,
//! observers for progress and logs, and atomic per-epoch checkpoints a run resumes from
//! exactly. The bundles a run ends in are `xray_infer::Bundle`s. The library prints nothing.

#![warn(missing_docs)]

mod batches;
mod checkpoint;
mod early_stop;
mod error;
mod loss;
mod optim;
mod schedule;
mod trainer;

pub use batches::{BatchSource, FeatureBatches, ImageBatches};
pub use early_stop::{Direction, EarlyStopping, Progress};
pub use error::TrainError;
pub use loss::{class_weights, weighted_bce_with_logits};
pub use optim::AdamW;
pub use schedule::LrSchedule;
pub use trainer::{
    check_devices, fit, predict_probabilities, EpochRecord, Loss, Observer, RocAuc, StoppingMetric,
    TrainConfig, TrainReport, TrainTarget, Trainer, ValidationLoss, WeightedBce,
};
