use std::path::PathBuf;

/// Errors from training, and from saving or loading model bundles.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The loss became NaN or infinite: training stops instead of saving a broken model.
    #[error("loss is {value} at epoch {epoch}, step {step}: lower the learning rate or check the inputs")]
    NonFiniteLoss {
        /// The 1-based epoch.
        epoch: usize,
        /// The 0-based step within the epoch.
        step: usize,
        /// The value given.
        value: f32,
    },
    /// A training option out of range.
    #[error("invalid training option {name}: {reason}")]
    InvalidConfig {
        /// The parameter.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A bundle file could not be read or written.
    #[error("bundle file {path}: {reason}")]
    BundleIo {
        /// The file or folder at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Data preparation failed.
    #[error(transparent)]
    Data(#[from] xray_data::DataError),
    /// Building or loading the model failed.
    #[error(transparent)]
    Model(#[from] xray_models::ModelError),
    /// Computing metrics failed.
    #[error(transparent)]
    Eval(#[from] xray_eval::EvalError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
