use std::path::PathBuf;

/// Errors from training.
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
    /// A checkpoint could not be written or read, or belongs to another run.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// The parser's or writer's error, where one caused it.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// An observer stopped training after an epoch (its checkpoint is written).
    #[error("training stopped by an observer after epoch {epoch}: {reason}")]
    Interrupted {
        /// The last completed epoch.
        epoch: usize,
        /// Why.
        reason: String,
    },
    /// A variable of the model lives on another device than the one training runs on.
    #[error("parameter `{parameter}` is on {found}, but training runs on {expected}: build the model on the training device")]
    DeviceMismatch {
        /// The variable's name in the varmap.
        parameter: String,
        /// Where it is.
        found: String,
        /// Where training runs.
        expected: String,
    },
    /// A training option out of range.
    #[error("invalid training option {name}: {reason}")]
    InvalidConfig {
        /// The parameter.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A file of the run (log, checkpoint) could not be read or written.
    #[error("file {path}: {source}")]
    Io {
        /// The file or folder at fault.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Saving or loading a bundle failed.
    #[error(transparent)]
    Infer(#[from] xray_infer::InferError),
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
