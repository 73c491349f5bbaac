use std::path::PathBuf;

/// Errors from building models and loading their weights.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A weights file could not be read.
    #[error("cannot read weights file {path}: {source}")]
    ReadWeights {
        /// The file or folder at fault.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A weights file is not valid safetensors (truncated, corrupt, not a weights file).
    #[error("weights file {path} is not valid safetensors: {source}")]
    ParseWeights {
        /// The file at fault.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// The model needs a tensor the file does not have.
    #[error("weights file {path} has no tensor `{tensor}` (expected shape {expected:?})")]
    MissingTensor {
        /// The file or folder at fault.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The shape the model expects.
        expected: Vec<usize>,
    },
    /// A tensor exists but has the wrong shape.
    #[error("tensor `{tensor}` in {path} has shape {actual:?}, the model expects {expected:?}")]
    ShapeMismatch {
        /// The file or folder at fault.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// The shape found in the file.
        actual: Vec<usize>,
    },
    /// The file holds tensors the model does not use (a different architecture).
    #[error("weights file {path} holds {count} tensor(s) the model does not use, e.g. `{first}`")]
    UnexpectedTensors {
        /// The file or folder at fault.
        path: PathBuf,
        /// How many there are.
        count: usize,
        /// The first of them, by name.
        first: String,
    },
    /// A configuration value out of range.
    #[error("invalid model configuration: {parameter}: {reason}")]
    InvalidConfig {
        /// The configuration field.
        parameter: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
